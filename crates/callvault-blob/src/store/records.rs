//! On-disk records of the chunk store's small column families. Each starts with a version byte;
//! a new layout gets a new version and old ones stay decodable.

use callvault_core::UnixMillis;

/// Version 1 of an index entry: `[1] length:u64 BE stored_at_ms:i64 BE`.
const INDEX_V1: u8 = 1;
/// Version 1 of a mark: `[1] state:u8 at_ms:i64 BE`.
const MARK_V1: u8 = 1;
/// Version 1 of a shred tombstone: `[1] at_ms:i64 BE`.
const TOMBSTONE_V1: u8 = 1;

/// The key a shredded chunk's tombstone is stored under: a domain-separated hash of its id, so
/// the shard's files keep no id of a shredded chunk while a later copy is still recognized.
pub(crate) fn tombstone_key(id: &[u8; 32]) -> [u8; 32] {
    *blake3::Hasher::new_derive_key("callvault chunk-store shred tombstone v1")
        .update(id)
        .finalize()
        .as_bytes()
}

/// When a chunk was shredded: the whole tombstone. It refuses the chunk forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub at: UnixMillis,
}

impl Tombstone {
    pub fn encode(&self) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[0] = TOMBSTONE_V1;
        out[1..9].copy_from_slice(&self.at.0.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes {
            [TOMBSTONE_V1, rest @ ..] if rest.len() == 8 => Ok(Tombstone {
                at: UnixMillis(i64::from_be_bytes(rest.try_into().expect("8 bytes"))),
            }),
            [TOMBSTONE_V1, ..] => Err(format!("tombstone v1 of {} bytes", bytes.len())),
            [v, ..] => Err(format!("tombstone of unknown version {v}")),
            [] => Err("empty tombstone".into()),
        }
    }
}

/// What the index knows of a held chunk without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub length: u64,
    pub stored_at: UnixMillis,
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[0] = INDEX_V1;
        out[1..9].copy_from_slice(&self.length.to_be_bytes());
        out[9..17].copy_from_slice(&self.stored_at.0.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes {
            [INDEX_V1, rest @ ..] if rest.len() == 16 => Ok(IndexEntry {
                length: u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")),
                stored_at: UnixMillis(i64::from_be_bytes(rest[8..].try_into().expect("8 bytes"))),
            }),
            [INDEX_V1, ..] => Err(format!("index entry v1 of {} bytes", bytes.len())),
            [v, ..] => Err(format!("index entry of unknown version {v}")),
            [] => Err("empty index entry".into()),
        }
    }
}

/// Where a chunk is in collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkState {
    /// Stage 1: marked dead, still readable.
    Marked,
    /// Stage 2 done: removed; the tombstone refuses the chunk if it is offered again.
    Collected,
}

/// A chunk's collection mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredMark {
    /// Marked or collected.
    pub state: MarkState,
    /// When it entered that state.
    pub at: UnixMillis,
}

impl StoredMark {
    pub(crate) fn encode(&self) -> [u8; 10] {
        let mut out = [0u8; 10];
        out[0] = MARK_V1;
        out[1] = match self.state {
            MarkState::Marked => 1,
            MarkState::Collected => 2,
        };
        out[2..10].copy_from_slice(&self.at.0.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes {
            [MARK_V1, state, rest @ ..] if rest.len() == 8 => Ok(StoredMark {
                state: match state {
                    1 => MarkState::Marked,
                    2 => MarkState::Collected,
                    other => return Err(format!("mark of unknown state {other}")),
                },
                at: UnixMillis(i64::from_be_bytes(rest.try_into().expect("8 bytes"))),
            }),
            [MARK_V1, ..] => Err(format!("mark v1 of {} bytes", bytes.len())),
            [v, ..] => Err(format!("mark of unknown version {v}")),
            [] => Err("empty mark".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_v1() {
        let entry = IndexEntry {
            length: 258,
            stored_at: UnixMillis(1),
        };
        assert_eq!(
            entry.encode(),
            [1, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(IndexEntry::decode(&entry.encode()), Ok(entry));
        let mark = StoredMark {
            state: MarkState::Collected,
            at: UnixMillis(256),
        };
        assert_eq!(mark.encode(), [1, 2, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(StoredMark::decode(&mark.encode()), Ok(mark));
        assert!(StoredMark::decode(&[1, 3, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(StoredMark::decode(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(IndexEntry::decode(&[1, 0]).is_err());
        assert!(IndexEntry::decode(&[]).is_err());
        let tombstone = Tombstone { at: UnixMillis(2) };
        assert_eq!(tombstone.encode(), [1, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(Tombstone::decode(&tombstone.encode()), Ok(tombstone));
        assert!(Tombstone::decode(&[2, 0, 0, 0, 0, 0, 0, 0, 2]).is_err());
        assert!(Tombstone::decode(&[1, 0]).is_err());
    }

    #[test]
    fn tombstone_keys_name_no_chunk_id() {
        let id = [7u8; 32];
        let key = tombstone_key(&id);
        assert_ne!(key, id);
        assert_eq!(
            key,
            tombstone_key(&id),
            "the same id finds its tombstone again"
        );
        assert_ne!(key, tombstone_key(&[8u8; 32]));
    }
}
