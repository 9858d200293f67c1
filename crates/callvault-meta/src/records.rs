//! The records the state machine keeps in its column families, with their versioned encodings.
//!
//! They live apart from the code that reads and writes them (`apply`, `lifecycle`) so that they
//! build without RocksDB: the fuzz targets decode every one of them (see `fuzz/`), and a build
//! with `--no-default-features` compiles this module, the commands and the conversions only.

use callvault_core::codec::{DecodeError, Reader, VersionedRecord, Writer};
use callvault_core::{E164, UnixMillis};

use crate::command::MAX_CHUNKS_PER_CALL;

/// Per-jurisdiction counts kept by `apply`, so status queries cost the same at any size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls committed (recorded, purged at commit, or blocked with a call-detail record).
    pub calls_total: u64,
    /// Recordings stored and readable.
    pub live: u64,
    /// Live recordings with at least one hold.
    pub held: u64,
    /// Recordings expired at their deadline.
    pub expired: u64,
    /// Recordings crypto-shredded as privileged.
    pub purged: u64,
    /// Calls refused at ingest as privileged.
    pub blocked_privileged: u64,
    /// Purges whose receipts are not all in.
    pub purges_pending: u64,
    /// Call-detail records kept after their content went (expired, purged or blocked calls of
    /// which the policy keeps call details), until their own deadline.
    pub details_kept: u64,
    /// Call-detail records deleted at their deadline (only a tombstone is left of each).
    pub details_expired: u64,
}

impl VersionedRecord for Counters {
    const NAME: &'static str = "counters";
    const CURRENT_VERSION: u8 = 2;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(2);
        w.u64(self.calls_total)
            .u64(self.live)
            .u64(self.held)
            .u64(self.expired)
            .u64(self.purged)
            .u64(self.blocked_privileged)
            .u64(self.purges_pending)
            .u64(self.details_kept)
            .u64(self.details_expired);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if !(1..=2).contains(&version) {
            return Err(r.unsupported(version, 2));
        }
        let mut counters = Counters {
            calls_total: r.u64()?,
            live: r.u64()?,
            held: r.u64()?,
            expired: r.u64()?,
            purged: r.u64()?,
            blocked_privileged: r.u64()?,
            purges_pending: r.u64()?,
            ..Counters::default()
        };
        // Version 1 kept no call-detail counts: none were kept apart from recordings then.
        if version == 2 {
            counters.details_kept = r.u64()?;
            counters.details_expired = r.u64()?;
        }
        r.finish()?;
        Ok(counters)
    }
}

/// A sensitive number as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensitiveEntry {
    /// The number, canonical.
    pub number: E164,
    /// Why calls to it are sealed.
    pub reason: String,
    /// Who registered it.
    pub registrant: String,
    /// When.
    pub registered_at: UnixMillis,
}

impl VersionedRecord for SensitiveEntry {
    const NAME: &'static str = "sensitive entry";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.str(self.number.as_str())
            .str(&self.reason)
            .str(&self.registrant)
            .i64(self.registered_at.0);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let text = r.str("number", 16)?;
        let number = callvault_core::normalize(&text)
            .ok()
            .filter(|n| n.as_str() == text)
            .ok_or_else(|| r.invalid("number", "not canonical E.164"))?;
        let entry = SensitiveEntry {
            number,
            reason: r.str("reason", crate::command::MAX_TEXT)?,
            registrant: r.str("registrant", crate::command::MAX_PRINCIPAL)?,
            registered_at: UnixMillis(r.i64()?),
        };
        r.finish()?;
        Ok(entry)
    }
}

/// Where a command sits in the Raft log: what a commit receipt names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogPosition {
    /// The term of the entry.
    pub term: u64,
    /// Its index.
    pub index: u64,
}

impl VersionedRecord for LogPosition {
    const NAME: &'static str = "commit position";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u64(self.term).u64(self.index);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let position = LogPosition {
            term: r.u64()?,
            index: r.u64()?,
        };
        r.finish()?;
        Ok(position)
    }
}

/// Why a recording's content is being destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShredKind {
    /// Found privileged: a purge.
    Purge,
    /// Its retention deadline passed.
    Expiry,
}

/// A crypto-shred in progress: the data key is already gone from the state; this waits for every
/// meta replica to compact it away and purge its log past `key_entry`, and for the blob shards to
/// drop `chunk_ids`. Deleted when complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShredRecord {
    /// Purge or expiry.
    pub kind: ShredKind,
    /// When the shred applied (the command's time).
    pub started_at: UnixMillis,
    /// Index of the Raft log entry that carried the wrapped key (the call's commit).
    pub key_entry: u64,
    /// The chunks to remove from every shard.
    pub chunk_ids: Vec<[u8; 32]>,
    /// Meta replicas that sent their receipt.
    pub meta_receipts: Vec<u64>,
    /// Whether the blob collector confirmed the chunks gone from every shard.
    pub blob_done: bool,
    /// Index of the entry that shredded (the expiry, the purge): a snapshot at or after it no
    /// longer holds the key.
    pub shred_entry: u64,
    /// The members (voters and learners) when the shred applied: each owes a receipt, even if
    /// it leaves before sending it, unless its receipts are waived.
    pub required: Vec<u64>,
}

impl VersionedRecord for ShredRecord {
    const NAME: &'static str = "shred record";
    const CURRENT_VERSION: u8 = 2;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(2);
        w.u8(match self.kind {
            ShredKind::Purge => 0,
            ShredKind::Expiry => 1,
        })
        .i64(self.started_at.0)
        .u64(self.key_entry)
        .u32(self.chunk_ids.len() as u32);
        for id in &self.chunk_ids {
            w.bytes32(id);
        }
        write_nodes(&mut w, &self.meta_receipts);
        w.bool(self.blob_done).u64(self.shred_entry);
        write_nodes(&mut w, &self.required);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if !(1..=2).contains(&version) {
            return Err(r.unsupported(version, 2));
        }
        let kind = match r.u8()? {
            0 => ShredKind::Purge,
            1 => ShredKind::Expiry,
            t => return Err(r.invalid("kind", format!("unknown tag {t}"))),
        };
        let started_at = UnixMillis(r.i64()?);
        let key_entry = r.u64()?;
        let count = r.u32()? as usize;
        if count > MAX_CHUNKS_PER_CALL {
            return Err(r.invalid("chunk_ids", format!("{count} chunks")));
        }
        let mut chunk_ids = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            chunk_ids.push(r.bytes32()?);
        }
        let meta_receipts = read_nodes(&mut r, "meta_receipts")?;
        let blob_done = r.bool("blob_done")?;
        // Version 1 knew neither: the shred entry is taken as the key's own (a snapshot past it
        // holds neither), and the members required are those of the membership when checked.
        let (shred_entry, required) = if version == 2 {
            (r.u64()?, read_nodes(&mut r, "required")?)
        } else {
            (key_entry, Vec::new())
        };
        let record = ShredRecord {
            kind,
            started_at,
            key_entry,
            chunk_ids,
            meta_receipts,
            blob_done,
            shred_entry,
            required,
        };
        r.finish()?;
        Ok(record)
    }
}

/// Most node ids a shred record lists.
const MAX_NODES: usize = 64;

fn write_nodes(w: &mut Writer, nodes: &[u64]) {
    w.u32(nodes.len() as u32);
    for node in nodes {
        w.u64(*node);
    }
}

fn read_nodes(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<u64>, DecodeError> {
    let count = r.u32()? as usize;
    if count > MAX_NODES {
        return Err(r.invalid(field, format!("{count} nodes")));
    }
    (0..count).map(|_| r.u64()).collect()
}

/// One principal's playback use in the current clock hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUse {
    /// Hours since the epoch.
    pub hour: i64,
    /// Calls played back in that hour.
    pub calls: u64,
    /// Audio bytes played back in that hour.
    pub bytes: u64,
}

impl VersionedRecord for QuotaUse {
    const NAME: &'static str = "quota use";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.i64(self.hour).u64(self.calls).u64(self.bytes);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let usage = QuotaUse {
            hour: r.i64()?,
            calls: r.u64()?,
            bytes: r.u64()?,
        };
        r.finish()?;
        Ok(usage)
    }
}

/// What the state machine keeps of one client session (see `crate::session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// The unique id (log position) of the entry that last used it.
    pub last_used: u64,
    /// Results below this sequence were acknowledged and dropped.
    pub acked_below: u64,
    /// Results kept.
    pub pending: u32,
}

impl VersionedRecord for SessionRecord {
    const NAME: &'static str = "client session";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u64(self.last_used)
            .u64(self.acked_below)
            .u32(self.pending);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let record = SessionRecord {
            last_used: r.u64()?,
            acked_below: r.u64()?,
            pending: r.u32()?,
        };
        r.finish()?;
        Ok(record)
    }
}

/// A cluster time or a voter's clock attestation, as the clock family stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockTime(pub UnixMillis);

impl VersionedRecord for ClockTime {
    const NAME: &'static str = "clock time";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.i64(self.0.0);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let time = ClockTime(UnixMillis(r.i64()?));
        r.finish()?;
        Ok(time)
    }
}

/// How far a registration's purge has gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeProgress {
    /// When the number was registered (the purges' time).
    pub registered_at: UnixMillis,
    /// Who registered it.
    pub registrant: String,
    /// Recordings purged so far.
    pub purged: u64,
    /// Applies so far (the registration's included).
    pub pages: u32,
}

impl VersionedRecord for PurgeProgress {
    const NAME: &'static str = "purge progress";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.i64(self.registered_at.0)
            .str(&self.registrant)
            .u64(self.purged)
            .u32(self.pages);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let progress = PurgeProgress {
            registered_at: UnixMillis(r.i64()?),
            registrant: r.str("registrant", crate::command::MAX_PRINCIPAL)?,
            purged: r.u64()?,
            pages: r.u32()?,
        };
        r.finish()?;
        Ok(progress)
    }
}

/// A departed member's shred receipts, waived because its volume will be destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptWaiver {
    /// When.
    pub at: UnixMillis,
    /// Who decided.
    pub principal: String,
    /// Why, for people.
    pub reason: String,
}

impl VersionedRecord for ReceiptWaiver {
    const NAME: &'static str = "receipt waiver";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.i64(self.at.0).str(&self.principal).str(&self.reason);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let waiver = ReceiptWaiver {
            at: UnixMillis(r.i64()?),
            principal: r.str("principal", crate::command::MAX_PRINCIPAL)?,
            reason: r.str("reason", crate::command::MAX_TEXT)?,
        };
        r.finish()?;
        Ok(waiver)
    }
}
