//! The Raft state machine on RocksDB.
//!
//! The state machine's database lives in a generation directory (`sm/gen-N`) named by the
//! pointer file `sm/CURRENT`. Installing a snapshot unpacks it into the next generation, opens it,
//! then switches the pointer atomically, so a crash at any step leaves either the old or the new
//! state, never a mix. Snapshots are RocksDB checkpoints packed into one file
//! ([`crate::snapshot`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use callvault_proto::v1 as pb;
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, StorageIOError,
};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options};
use tokio::io::AsyncSeekExt;

use crate::apply::{ApplyError, LogPosition, apply_command};
use crate::command::CommandResult;
use crate::convert::{self, from_disk, to_disk};
use crate::keys::{CF_SM_META, KEY_APPLIED, KEY_MEMBERSHIP, STATE_MACHINE_CFS};
use crate::purge_gate::PurgeGate;
use crate::snapshot;
use crate::storage::{OpenError, open_db, sync_dir, write_atomically};
use crate::txn::Txn;
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const CURRENT_SNAPSHOT: &str = "current.snap";
/// A received snapshot, complete and synced, while it is being installed.
const INSTALLING_SNAPSHOT: &str = "incoming.tmp";

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn cf_descriptors() -> Vec<ColumnFamilyDescriptor> {
    STATE_MACHINE_CFS
        .iter()
        .map(|name| {
            let mut options = Options::default();
            options.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(*name, options)
        })
        .collect()
}

/// State shared between the state machine, its snapshot builders and readers.
struct Shared {
    /// `<data>/sm`: generation directories and the pointer file.
    sm_dir: PathBuf,
    /// `<data>/snapshots`: the current snapshot file and work files.
    snapshot_dir: PathBuf,
    /// The open generation and its number.
    db: RwLock<(u64, Arc<DB>)>,
    /// Serializes snapshot builds and installs, which both replace the current snapshot file.
    snapshot_lock: tokio::sync::Mutex<u64>,
    /// The number of the last snapshot build that finished (numbers count up as builds start).
    last_built: std::sync::atomic::AtomicU64,
    /// When recent apply calls ran, for tracing (in memory only; see `apply_trace`).
    apply_times: Arc<crate::apply_trace::ApplyTimes>,
    /// The key call tombstones are filed under (the cluster's index key).
    id_key: [u8; 32],
    /// The snapshot a crash would leave this store serving, for the log's purges.
    gate: PurgeGate,
}

/// The state machine. Cheap to clone: clones share the database (one of them is openraft's).
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl StateMachineStore {
    /// Opens (or creates) the state machine under `data_dir`, filing call tombstones under the
    /// all-zero key (tests and tools; a node uses [`StateMachineStore::open_keyed`]).
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        Self::open_keyed(data_dir, [0; 32])
    }

    /// Opens (or creates) the state machine under `data_dir`, filing call tombstones under
    /// hashes keyed by `id_key`, the cluster's index key: every replica must use the same.
    pub fn open_keyed(data_dir: &Path, id_key: [u8; 32]) -> Result<Self, OpenError> {
        let sm_dir = data_dir.join("sm");
        let snapshot_dir = data_dir.join("snapshots");
        for dir in [&sm_dir, &snapshot_dir] {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let pointer = sm_dir.join("CURRENT");
        let generation = match std::fs::read_to_string(&pointer) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| OpenError::Io {
                path: pointer.clone(),
                source: std::io::Error::other(format!("not a generation number: {text:?}")),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::read_dir(&sm_dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
                {
                    return Err(OpenError::Io {
                        path: pointer,
                        source: std::io::Error::other(
                            "missing while state-machine data exists: the store is damaged",
                        ),
                    });
                }
                let db = open_db(&generation_dir(&sm_dir, 1), cf_descriptors())?;
                drop(db);
                write_atomically(&pointer, b"1")?;
                1
            }
            Err(source) => {
                return Err(OpenError::Io {
                    path: pointer,
                    source,
                });
            }
        };
        let dir = generation_dir(&sm_dir, generation);
        if !dir.exists() {
            return Err(OpenError::Io {
                path: dir,
                source: std::io::Error::other("the current generation is missing"),
            });
        }
        let db = open_db(&dir, cf_descriptors())?;
        crate::migrate::index_chunk_refs(&db).map_err(|source| OpenError::Io {
            path: dir.clone(),
            source: std::io::Error::other(source.to_string()),
        })?;
        remove_other_generations(&sm_dir, generation);
        let _ = std::fs::remove_dir_all(snapshot_dir.join("build-checkpoint"));
        let store = StateMachineStore {
            shared: Arc::new(Shared {
                sm_dir,
                snapshot_dir,
                db: RwLock::new((generation, Arc::new(db))),
                snapshot_lock: tokio::sync::Mutex::new(0),
                last_built: std::sync::atomic::AtomicU64::new(0),
                apply_times: Arc::default(),
                id_key,
                gate: PurgeGate::new(None),
            }),
        };
        store.finish_interrupted_install()?;
        let served = store.current_snapshot_id().map_err(|e| OpenError::Io {
            path: store.current_snapshot_path(),
            source: std::io::Error::other(e.to_string()),
        })?;
        store.shared.gate.advance(served);
        Ok(store)
    }

    /// What the Raft log's purges wait for: the snapshot this store would serve after a crash.
    /// Give it to the log store beside it ([`crate::LogStore::purging_behind`]).
    pub fn purge_gate(&self) -> PurgeGate {
        self.shared.gate.clone()
    }

    /// Finishes a snapshot install that a crash interrupted. Its file was complete and synced
    /// before the install began, and openraft may already have purged the log up to it; left
    /// half done, the next start finds the log purged past the snapshot file it is served (and
    /// openraft refuses to run). So the state is brought to the snapshot, or, when the pointer
    /// had already switched, the file is kept as the current snapshot.
    fn finish_interrupted_install(&self) -> Result<(), OpenError> {
        let incoming = self.shared.snapshot_dir.join(INSTALLING_SNAPSHOT);
        if !incoming.exists() {
            return Ok(());
        }
        let damaged = |e: &dyn std::fmt::Display| OpenError::Io {
            path: incoming.clone(),
            source: std::io::Error::other(format!("finishing an interrupted install: {e}")),
        };
        let meta = snapshot::verify(&incoming)
            .and_then(|()| snapshot::read_meta(&incoming))
            .ok()
            .and_then(|m| convert::snapshot_meta_from_pb(&m).ok());
        let Some(meta) = meta else {
            // Never complete, so never installed: the leader sends it again.
            let _ = std::fs::remove_file(&incoming);
            return Ok(());
        };
        let applied = self.applied().map_err(|e| damaged(&e))?;
        if meta.last_log_id > applied {
            tracing::warn!(snapshot = ?meta.last_log_id, ?applied, "finishing an interrupted snapshot install");
            return self
                .install_blocking(&incoming, &meta)
                .map_err(|e| damaged(&e));
        }
        if meta.last_log_id == applied {
            std::fs::rename(&incoming, self.current_snapshot_path()).map_err(|e| damaged(&e))?;
            sync_dir(&self.shared.snapshot_dir).map_err(|e| damaged(&e))?;
        } else {
            let _ = std::fs::remove_file(&incoming);
        }
        Ok(())
    }

    /// A read-only write set over the current database, with the tombstone key: for reads that
    /// look a call up by id (its tombstone is filed under a keyed hash).
    pub fn id_key(&self) -> [u8; 32] {
        self.shared.id_key
    }

    /// The current database, for reads. Reads through it see every applied entry.
    pub fn db(&self) -> Arc<DB> {
        Arc::clone(&self.shared.db.read().expect("lock is not poisoned").1)
    }

    fn read_applied(db: &DB) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let cf = db.cf_handle(CF_SM_META).expect("created at open");
        let applied = db
            .get_cf(cf, KEY_APPLIED)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
            .map(|bytes| decode_applied(&bytes))
            .transpose()?;
        let membership = match db
            .get_cf(cf, KEY_MEMBERSHIP)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(bytes) => {
                let m: pb::StoredMembership =
                    from_disk("membership", &bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
                convert::stored_membership_from_pb(&m).map_err(|e| sm_err(ErrorVerb::Read, e))?
            }
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    /// The number the next snapshot build will have, minus one: a build numbered higher than
    /// this value started after the call.
    pub async fn snapshot_builds_started(&self) -> u64 {
        *self.shared.snapshot_lock.lock().await
    }

    /// The number of the last snapshot build that finished.
    pub fn last_snapshot_built(&self) -> u64 {
        self.shared
            .last_built
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes deleted data keys physically unreadable: flushes every column family (so the
    /// write-ahead log that carried the keys becomes obsolete and is deleted) and rewrites the
    /// key family down to the bottom level, dropping the deleted values and their tombstones.
    pub fn compact_shredded_keys(&self) -> Result<(), rocksdb::Error> {
        let db = self.db();
        let cfs: Vec<_> = STATE_MACHINE_CFS
            .iter()
            .map(|name| db.cf_handle(name).expect("created at open"))
            .collect();
        db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        db.flush_wal(true)?;
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        options.set_exclusive_manual_compaction(false);
        let keys = db.cf_handle(crate::keys::CF_KEYS).expect("created at open");
        db.compact_range_cf_opt(keys, None::<&[u8]>, None::<&[u8]>, &options);
        Ok(())
    }
    /// A digest of the replicated state (every state-machine family but the apply position),
    /// equal on every replica at the same applied index.
    pub fn digest(&self) -> Result<[u8; 32], rocksdb::Error> {
        let db = self.db();
        let snapshot = db.snapshot();
        Self::digest_of(&db, &snapshot)
    }

    /// The last applied log id and the digest of the state at exactly that id, both read from
    /// one RocksDB snapshot: read from the live store, a concurrent apply could pair an index
    /// with a later state, and replicas that agree would look diverged.
    pub fn applied_and_digest(&self) -> Result<(Option<LogId>, [u8; 32]), StorageError> {
        let db = self.db();
        let snapshot = db.snapshot();
        let cf = db.cf_handle(CF_SM_META).expect("created at open");
        let applied = snapshot
            .get_cf(cf, KEY_APPLIED)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
            .map(|bytes| decode_applied(&bytes))
            .transpose()?;
        let digest = Self::digest_of(&db, &snapshot).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok((applied, digest))
    }

    fn digest_of(db: &DB, snapshot: &rocksdb::Snapshot<'_>) -> Result<[u8; 32], rocksdb::Error> {
        let mut hasher = blake3::Hasher::new();
        for name in STATE_MACHINE_CFS.iter().filter(|n| **n != CF_SM_META) {
            hasher.update(name.as_bytes());
            let cf = db.cf_handle(name).expect("created at open");
            for item in snapshot.iterator_cf(cf, IteratorMode::Start) {
                let (key, value) = item?;
                hasher.update(&(key.len() as u64).to_le_bytes());
                hasher.update(&key);
                hasher.update(&(value.len() as u64).to_le_bytes());
                hasher.update(&value);
            }
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// The last applied log id, read from the store.
    pub fn applied(&self) -> Result<Option<LogId>, StorageError> {
        Ok(Self::read_applied(&self.db())?.0)
    }

    /// When recent apply calls ran (for the proposer's trace spans).
    pub fn apply_times(&self) -> Arc<crate::apply_trace::ApplyTimes> {
        self.shared.apply_times.clone()
    }

    /// Size in bytes of the current snapshot file, if there is one (for metrics).
    pub fn current_snapshot_bytes(&self) -> Option<u64> {
        std::fs::metadata(self.current_snapshot_path())
            .ok()
            .map(|m| m.len())
    }

    fn current_snapshot_path(&self) -> PathBuf {
        self.shared.snapshot_dir.join(CURRENT_SNAPSHOT)
    }

    /// The last entry in the current snapshot file, which the store serves after a crash (a
    /// build flushes the database first; an install switches to the snapshot's state first).
    pub fn current_snapshot_id(&self) -> Result<Option<LogId>, StorageError> {
        let path = self.current_snapshot_path();
        if !path.exists() {
            return Ok(None);
        }
        let meta = snapshot::read_meta(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let meta =
            convert::snapshot_meta_from_pb(&meta).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(meta.last_log_id)
    }

    fn open_current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.current_snapshot_path();
        if !path.exists() {
            return Ok(None);
        }
        let meta = snapshot::read_meta(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let meta =
            convert::snapshot_meta_from_pb(&meta).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let file = std::fs::File::open(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }

    /// Checkpoints the database, packs it into the current snapshot file and returns it.
    async fn build(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut builds = self.shared.snapshot_lock.lock().await;
        *builds += 1;
        let build_number = *builds;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build_blocking(build_number))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))??;
        self.shared
            .last_built
            .store(build_number, std::sync::atomic::Ordering::SeqCst);
        let built = self
            .open_current_snapshot()?
            .ok_or_else(|| snap_err(ErrorVerb::Read, std::io::Error::other("snapshot vanished")))?;
        // The checkpoint flushed the database through it, and its file is synced.
        self.shared.gate.advance(built.meta.last_log_id);
        Ok(built)
    }

    fn build_blocking(&self, build_number: u64) -> Result<(), StorageError> {
        let err = |e: &dyn std::fmt::Display| {
            snap_err(ErrorVerb::Write, std::io::Error::other(e.to_string()))
        };
        let checkpoint_dir = self.shared.snapshot_dir.join("build-checkpoint");
        let _ = std::fs::remove_dir_all(&checkpoint_dir);
        let db = self.db();
        Checkpoint::new(&db)
            .and_then(|c| c.create_checkpoint(&checkpoint_dir))
            .map_err(|e| err(&e))?;
        // The checkpoint is one consistent view: read its position from it, not from the live DB.
        let (applied, membership) = {
            let view = DB::open_cf_for_read_only(
                &Options::default(),
                &checkpoint_dir,
                STATE_MACHINE_CFS,
                false,
            )
            .map_err(|e| err(&e))?;
            Self::read_applied(&view)?
        };
        let snapshot_id = match &applied {
            Some(id) => format!(
                "{}-{}-{}-{build_number}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => format!("0-0-0-{build_number}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        let tmp = self.shared.snapshot_dir.join("build.tmp");
        snapshot::pack(&checkpoint_dir, &convert::snapshot_meta_to_pb(&meta), &tmp)
            .map_err(|e| err(&e))?;
        std::fs::rename(&tmp, self.current_snapshot_path()).map_err(|e| err(&e))?;
        sync_dir(&self.shared.snapshot_dir).map_err(|e| err(&e))?;
        std::fs::remove_dir_all(&checkpoint_dir).map_err(|e| err(&e))?;
        Ok(())
    }

    /// Keeps a received snapshot durably, tells the purge gate, then installs it.
    async fn install(
        &self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let _guard = self.shared.snapshot_lock.lock().await;
        let incoming = self.receive_durably(snapshot).await?;
        // From here a crash finishes the install at the next open (`finish_interrupted_install`),
        // so the log may now be purged through it.
        self.shared.gate.advance(meta.last_log_id);
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.install_blocking(&incoming, &meta))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))??;
        let _ = tokio::fs::remove_file(self.shared.snapshot_dir.join("receiving.tmp")).await;
        Ok(())
    }

    /// Copies whatever handle openraft gives us (the file we handed out, or another node's
    /// snapshot in tests) into [`INSTALLING_SNAPSHOT`], synced with its directory and verified:
    /// once this returns, the next open installs it even if this process dies first.
    async fn receive_durably(
        &self,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<PathBuf, StorageError> {
        let incoming = self.shared.snapshot_dir.join(INSTALLING_SNAPSHOT);
        let mut out = tokio::fs::File::create(&incoming)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        snapshot
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        tokio::io::copy(&mut snapshot, &mut out)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        out.sync_all()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        drop(out);
        let (dir, file) = (self.shared.snapshot_dir.clone(), incoming.clone());
        // A damaged file would be dropped at the next open, so it must not let a purge through.
        tokio::task::spawn_blocking(move || {
            sync_dir(&dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            snapshot::verify(&file).map_err(|e| snap_err(ErrorVerb::Read, e))
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))??;
        Ok(incoming)
    }

    /// An error from a state-machine call stops openraft's state-machine worker for good: tell
    /// the purge gate, so a purge waiting for an install fails instead of waiting forever.
    fn stops_worker<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &result {
            self.shared
                .gate
                .fail(format!("the state machine failed: {e}"));
        }
        result
    }

    /// Installs a received snapshot file: verify, unpack into the next generation, open it,
    /// switch the pointer, keep the file as the current snapshot.
    fn install_blocking(&self, received: &Path, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let err = |e: &dyn std::fmt::Display| {
            snap_err(ErrorVerb::Write, std::io::Error::other(e.to_string()))
        };
        let (generation, _) = *self.shared.db.read().expect("lock is not poisoned");
        let next = generation + 1;
        let next_dir = generation_dir(&self.shared.sm_dir, next);
        let _ = std::fs::remove_dir_all(&next_dir);
        let packed_meta = snapshot::unpack(received, &next_dir).map_err(|e| err(&e))?;
        let packed_meta = convert::snapshot_meta_from_pb(&packed_meta).map_err(|e| err(&e))?;
        if packed_meta.last_log_id != meta.last_log_id {
            return Err(err(&format!(
                "snapshot file is at {:?}, openraft installs {:?}",
                packed_meta.last_log_id, meta.last_log_id
            )));
        }
        let db = open_db(&next_dir, cf_descriptors()).map_err(|e| err(&e))?;
        if Self::read_applied(&db)?.0 != meta.last_log_id {
            return Err(err(&"unpacked state is not at the snapshot's log id"));
        }
        // A snapshot from a member that predates the chunk-reference index gains it here.
        crate::migrate::index_chunk_refs(&db).map_err(|e| err(&e))?;
        sync_dir(&self.shared.sm_dir).map_err(|e| err(&e))?;
        crate::failpoint!("snapshot-install-before-switch");
        write_atomically(
            &self.shared.sm_dir.join("CURRENT"),
            next.to_string().as_bytes(),
        )
        .map_err(|e| err(&e))?;
        *self.shared.db.write().expect("lock is not poisoned") = (next, Arc::new(db));
        crate::failpoint!("snapshot-install-after-switch");
        std::fs::rename(received, self.current_snapshot_path()).map_err(|e| err(&e))?;
        sync_dir(&self.shared.snapshot_dir).map_err(|e| err(&e))?;
        // The old generation is dropped once its last reader lets go of it.
        remove_other_generations(&self.shared.sm_dir, next);
        Ok(())
    }
}

fn generation_dir(sm_dir: &Path, generation: u64) -> PathBuf {
    sm_dir.join(format!("gen-{generation}"))
}

fn remove_other_generations(sm_dir: &Path, keep: u64) {
    let Ok(entries) = std::fs::read_dir(sm_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("gen-")
            .and_then(|n| n.parse::<u64>().ok())
            && n != keep
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Applies entries in one atomic write, with the applied log id and membership.
///
/// Every entry sees the state exactly as the entries before it left it, whatever batch openraft
/// happened to hand over: a membership entry is written into the write set where it sits, so a
/// shred receipt after it counts the new voters on every replica, however the log was cut into
/// apply calls.
fn apply_blocking(
    db: &DB,
    id_key: [u8; 32],
    entries: Vec<Entry>,
) -> Result<Vec<CommandResult>, StorageError> {
    let mut txn = Txn::new(db).with_id_key(id_key);
    let mut results = Vec::with_capacity(entries.len());
    let mut last = None;
    for entry in entries {
        last = Some(entry.log_id);
        let result = match entry.payload {
            EntryPayload::Blank => CommandResult::Empty,
            EntryPayload::Normal(command) => {
                let at = LogPosition {
                    term: entry.log_id.leader_id.term,
                    index: entry.log_id.index,
                };
                apply_command(&mut txn, &command, at).map_err(|e| match e {
                    ApplyError::Rocks(e) => sm_err(ErrorVerb::Write, e),
                    ApplyError::Decode(e) => sm_err(ErrorVerb::Read, e),
                    ApplyError::Audit(e) => sm_err(ErrorVerb::Write, e),
                })?
            }
            EntryPayload::Membership(m) => {
                // Membership changes are audited in the same write as the membership itself.
                crate::audit_log::append_membership(&mut txn, entry.log_id.index, &m)
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                let stored = StoredMembership::new(Some(entry.log_id), m);
                txn.put(
                    CF_SM_META,
                    KEY_MEMBERSHIP.to_vec(),
                    to_disk(&convert::stored_membership_to_pb(&stored)),
                );
                CommandResult::Empty
            }
        };
        results.push(result);
    }
    if let Some(last) = last {
        txn.put(
            CF_SM_META,
            KEY_APPLIED.to_vec(),
            to_disk(&convert::log_id_to_pb(&last)),
        );
    }
    // Not fsync'd: the log is, and an entry lost here is re-applied from it after a crash.
    db.write(txn.into_batch())
        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
    Ok(results)
}

/// The stored apply position.
fn decode_applied(bytes: &[u8]) -> Result<LogId, StorageError> {
    let id: pb::LogId =
        from_disk("applied log id", bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
    convert::log_id_from_pb(&id).map_err(|e| sm_err(ErrorVerb::Read, e))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.build().await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Self::read_applied(&self.db())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let indexes = entries.first().zip(entries.last());
        let indexes = indexes.map(|(first, last)| (first.log_id.index, last.log_id.index));
        let started = std::time::SystemTime::now();
        let db = self.db();
        let id_key = self.shared.id_key;
        let results = tokio::task::spawn_blocking(move || apply_blocking(&db, id_key, entries))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))
            .and_then(|applied| applied);
        let results = self.stops_worker(results)?;
        // Wall-clock times for trace spans only: nothing applied depends on them.
        if let Some((first, last)) = indexes {
            self.shared
                .apply_times
                .record(crate::apply_trace::ApplyCall {
                    first,
                    last,
                    started,
                    finished: std::time::SystemTime::now(),
                });
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.shared.snapshot_dir.join("receiving.tmp");
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e));
        self.stops_worker(file).map(Box::new)
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let installed = self.install(meta, snapshot).await;
        self.stops_worker(installed)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.open_current_snapshot();
        self.stops_worker(current)
    }
}

#[cfg(test)]
mod batch_splits;
#[cfg(test)]
mod retention_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Counters, counters, current_policy};
    use crate::command::tests::{commit, policy, register};
    use crate::command::{Command, CommitOutcome, Refusal};
    use callvault_core::call::Lifecycle;
    use callvault_core::{CallRecord, Jurisdiction, UnixMillis};
    use openraft::CommittedLeaderId;

    struct Harness {
        _dir: tempfile::TempDir,
        sm: StateMachineStore,
        index: u64,
    }

    impl Harness {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let sm = StateMachineStore::open(dir.path()).unwrap();
            let mut h = Harness {
                _dir: dir,
                sm,
                index: 0,
            };
            let put = Command::PutPolicy {
                jurisdiction: Jurisdiction::Tx,
                policy: policy(30),
                expected_version: 0,
                principal: "op".into(),
                at: UnixMillis(0),
            };
            assert_eq!(
                h.apply(vec![put]),
                vec![CommandResult::PolicyPut { version: 1 }]
            );
            h
        }

        fn apply(&mut self, commands: Vec<Command>) -> Vec<CommandResult> {
            let entries = commands
                .into_iter()
                .map(|c| {
                    self.index += 1;
                    Entry {
                        log_id: LogId {
                            leader_id: CommittedLeaderId::new(1, 1),
                            index: self.index,
                        },
                        payload: EntryPayload::Normal(c),
                    }
                })
                .collect();
            apply_blocking(&self.sm.db(), [0; 32], entries).unwrap()
        }

        /// Makes node 1 the only voter and its clock (so the cluster's time) `at`.
        fn time(&mut self, at: i64) {
            self.index += 1;
            let membership = Entry {
                log_id: LogId {
                    leader_id: CommittedLeaderId::new(1, 1),
                    index: self.index,
                },
                payload: EntryPayload::Membership(openraft::Membership::new(
                    vec![std::collections::BTreeSet::from([1])],
                    (),
                )),
            };
            apply_blocking(&self.sm.db(), [0; 32], vec![membership]).unwrap();
            self.apply(vec![Command::Retention(
                crate::retention_command::RetentionCommand::AttestTime {
                    node_id: 1,
                    wall: UnixMillis(at),
                },
            )]);
        }

        fn counters(&self) -> Counters {
            let db = self.sm.db();
            counters(&Txn::new(&db), Jurisdiction::Tx).unwrap()
        }

        fn call(&self, id: &str) -> Option<CallRecord> {
            let db = self.sm.db();
            let key =
                crate::keys::call(Jurisdiction::Tx, &callvault_core::CallId::new(id).unwrap());
            Txn::new(&db)
                .get(crate::keys::CF_CALLS, &key)
                .unwrap()
                .map(|b| CallRecord::decode(&b).unwrap())
        }
    }

    use callvault_core::codec::VersionedRecord;

    /// A commit result naming the log index of the call's first commit (term 1).
    fn committed(outcome: CommitOutcome, duplicate: bool, index: u64) -> CommandResult {
        CommandResult::CallCommitted {
            outcome,
            policy_version: 1,
            duplicate,
            committed_at: crate::apply::LogPosition { term: 1, index },
        }
    }

    #[test]
    fn commits_are_idempotent_and_conflicts_refused() {
        let mut h = Harness::new();
        assert_eq!(
            h.apply(vec![commit("c-1", 1, 1000)]),
            vec![committed(CommitOutcome::Recorded, false, 2)]
        );
        // The retry answers with the first commit's position: the platform sees one receipt.
        assert_eq!(
            h.apply(vec![commit("c-1", 1, 1000)]),
            vec![committed(CommitOutcome::Recorded, true, 2)]
        );
        assert_eq!(
            h.apply(vec![commit("c-1", 2, 1000)]),
            vec![CommandResult::Refused(Refusal::CallIdConflict)]
        );
        let c = h.counters();
        assert_eq!((c.calls_total, c.live), (1, 1));
    }

    #[test]
    fn registration_purges_past_calls_and_blocks_commits_in_the_same_batch() {
        let mut h = Harness::new();
        let results = h.apply(vec![
            commit("a-1", 1, 1000),
            commit("a-2", 1, 2000),
            commit("other", 2, 3000),
            register("(512) 555-0100", 1, 4000),
            // Streamed while the number was registered: the commit becomes a purge.
            commit("a-3", 1, 5000),
        ]);
        assert_eq!(results[3], CommandResult::NumberRegistered { purged: 2 });
        assert_eq!(
            results[4],
            committed(CommitOutcome::PurgedAtCommit, false, 6)
        );
        for id in ["a-1", "a-2", "a-3"] {
            assert!(
                matches!(h.call(id).unwrap().lifecycle, Lifecycle::Purged { .. }),
                "{id}"
            );
        }
        assert_eq!(h.call("other").unwrap().lifecycle, Lifecycle::Live);
        // The crypto-shred: no wrapped key is left for a purged call.
        let db = h.sm.db();
        let keys_left: Vec<_> = db
            .iterator_cf(
                db.cf_handle(crate::keys::CF_KEYS).unwrap(),
                IteratorMode::Start,
            )
            .map(|kv| kv.unwrap().0.to_vec())
            .collect();
        assert_eq!(
            keys_left,
            vec![crate::keys::call(
                Jurisdiction::Tx,
                &callvault_core::CallId::new("other").unwrap()
            )]
        );
        // A purged id is refused forever, even with the same content.
        assert_eq!(
            h.apply(vec![commit("a-1", 1, 1000)]),
            vec![CommandResult::Refused(Refusal::CallIdPurged)]
        );
        let c = h.counters();
        assert_eq!((c.calls_total, c.live, c.purged), (4, 1, 3));
    }

    #[test]
    fn a_flag_shreds_one_call_and_a_second_flag_finds_nothing_left() {
        let mut h = Harness::new();
        h.apply(vec![commit("f-1", 1, 1000), commit("f-2", 1, 2000)]);
        let flag = |id: &str| Command::FlagPrivileged {
            jurisdiction: Jurisdiction::Tx,
            call_id: callvault_core::CallId::new(id).unwrap(),
            reason: "attorney heard on review".into(),
            evidence: "review 7".into(),
            principal: "tx-registry".into(),
            at: UnixMillis(9000),
        };
        assert_eq!(
            h.apply(vec![flag("f-1")]),
            vec![CommandResult::CallFlagged { purged: true }]
        );
        assert_eq!(
            h.apply(vec![flag("f-1")]),
            vec![CommandResult::CallFlagged { purged: false }]
        );
        assert_eq!(
            h.apply(vec![flag("nope")]),
            vec![CommandResult::Refused(Refusal::NoSuchCall)]
        );
        assert!(matches!(
            h.call("f-1").unwrap().lifecycle,
            Lifecycle::Purged { .. }
        ));
        assert_eq!(h.call("f-2").unwrap().lifecycle, Lifecycle::Live);
        let c = h.counters();
        assert_eq!((c.live, c.purged, c.purges_pending), (1, 1, 1));
    }

    #[test]
    fn a_sensitive_registration_seals_past_and_future_calls_to_the_number() {
        let mut h = Harness::new();
        h.apply(vec![commit("s-1", 5, 1000), commit("o-1", 6, 1000)]);
        let register = Command::RegisterSensitive {
            jurisdiction: Jurisdiction::Tx,
            number: callvault_core::normalize("+1 512 555 0199").unwrap(),
            fingerprint: [5; 32],
            reason: "victim advocate".into(),
            principal: "tx-registry".into(),
            at: UnixMillis(1500),
        };
        assert_eq!(
            h.apply(vec![register]),
            vec![CommandResult::SensitiveRegistered]
        );
        h.apply(vec![commit("s-2", 5, 2000)]);
        assert!(h.call("s-1").unwrap().sealed);
        assert!(h.call("s-2").unwrap().sealed);
        assert!(!h.call("o-1").unwrap().sealed);
        let standing =
            crate::reads::standing(&h.sm.db(), [0; 32], Jurisdiction::Tx, &[5; 32], None).unwrap();
        assert!(standing.sensitive && !standing.privileged);
    }

    #[test]
    fn listings_page_newest_first_and_stay_in_their_jurisdiction() {
        use crate::reads::{CallFilter, list_calls};
        let mut h = Harness::new();
        h.apply(
            (0..25)
                .map(|i| commit(&format!("l-{i:02}"), 1, i * 1000))
                .collect(),
        );
        let db = h.sm.db();
        let mut seen = Vec::new();
        let mut token = Vec::new();
        loop {
            let page =
                list_calls(&db, Jurisdiction::Tx, &CallFilter::default(), 10, &token).unwrap();
            assert!(page.items.len() <= 10);
            seen.extend(page.items.iter().map(|c| c.call_id.as_str().to_string()));
            match page.next_token {
                Some(next) => token = next,
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).rev().map(|i| format!("l-{i:02}")).collect();
        assert_eq!(seen, expected);

        let window = CallFilter {
            started_after: Some(UnixMillis(4000)),
            started_before: Some(UnixMillis(8000)),
            ..Default::default()
        };
        let page = list_calls(&db, Jurisdiction::Tx, &window, 0, &[]).unwrap();
        let ids: Vec<_> = page.items.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(ids, ["l-07", "l-06", "l-05"]);

        // Another jurisdiction sees none of them, and cannot resume from Texas's token.
        let other = list_calls(&db, Jurisdiction::Ok, &CallFilter::default(), 0, &[]).unwrap();
        assert!(other.items.is_empty());
        let texas_token = list_calls(&db, Jurisdiction::Tx, &CallFilter::default(), 1, &[])
            .unwrap()
            .next_token
            .unwrap();
        assert!(
            list_calls(
                &db,
                Jurisdiction::Ok,
                &CallFilter::default(),
                1,
                &texas_token
            )
            .is_err()
        );
    }

    #[test]
    fn policy_versions_are_optimistic_and_commits_need_a_policy() {
        let mut h = Harness::new();
        let put = |expected| Command::PutPolicy {
            jurisdiction: Jurisdiction::Tx,
            policy: policy(60),
            expected_version: expected,
            principal: "op".into(),
            at: UnixMillis(1),
        };
        assert_eq!(
            h.apply(vec![put(0)]),
            vec![CommandResult::Refused(Refusal::PolicyVersionMismatch {
                current: 1
            })]
        );
        assert_eq!(
            h.apply(vec![put(1)]),
            vec![CommandResult::PolicyPut { version: 2 }]
        );
        let db = h.sm.db();
        assert_eq!(
            current_policy(&Txn::new(&db), Jurisdiction::Tx)
                .unwrap()
                .unwrap()
                .version,
            2
        );

        let Command::CommitCall {
            mut call,
            wrapped_key,
            chunk_ids,
            principal,
            at,
        } = commit("ut-1", 1, 0)
        else {
            unreachable!()
        };
        call.jurisdiction = Jurisdiction::Ut;
        assert_eq!(
            h.apply(vec![Command::CommitCall {
                call,
                wrapped_key,
                chunk_ids,
                principal,
                at
            }]),
            vec![CommandResult::Refused(Refusal::NoPolicy)]
        );
    }

    #[test]
    fn every_applied_event_is_in_the_audit_log_in_order_and_proves_inclusion() {
        use callvault_audit::{AuditEntry, AuditEvent, MerkleTree, leaf_hash};
        let mut h = Harness::new();
        h.apply(vec![
            commit("a-1", 1, 1000),
            commit("a-1", 1, 1000), // a retry: no new entry
            commit("b-1", 2, 2000),
            register("(512) 555-0100", 1, 4000),
        ]);
        let db = h.sm.db();
        let mut txn = Txn::new(&db);
        let entries: Vec<AuditEntry> = db
            .iterator_cf(
                db.cf_handle(crate::audit_log::CF_AUDIT_ENTRIES).unwrap(),
                IteratorMode::Start,
            )
            .map(|kv| AuditEntry::decode(&kv.unwrap().1).unwrap())
            .collect();
        let events: Vec<(AuditEvent, &str)> =
            entries.iter().map(|e| (e.event(), e.subject())).collect();
        assert_eq!(
            events,
            vec![
                (AuditEvent::PolicyChanged, "retention-policy"),
                (AuditEvent::CallRecorded, "a-1"),
                (AuditEvent::CallRecorded, "b-1"),
                (AuditEvent::PurgeStarted, "a-1"),
                (AuditEvent::NumberRegistered, entries[4].subject()),
            ]
        );
        assert!(!entries[4].subject().contains("512"), "no number in clear");
        let tree = MerkleTree::new(crate::audit_log::TreeNodes(&mut txn));
        let size = tree.size().unwrap();
        assert_eq!(size, 5);
        let root = tree.root().unwrap();
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.sequence(), i as u64);
            let proof = tree.inclusion_proof(i as u64, size).unwrap();
            proof.verify(&leaf_hash(&entry.encode()), &root).unwrap();
        }
    }

    /// The snapshot a store serves, as its file says.
    fn served_snapshot(sm: &StateMachineStore) -> Option<LogId> {
        let meta = snapshot::read_meta(&sm.current_snapshot_path()).ok()?;
        convert::snapshot_meta_from_pb(&meta).unwrap().last_log_id
    }

    #[test]
    fn a_snapshot_install_cut_short_by_a_crash_is_finished_at_the_next_open() {
        let mut leader = Harness::new();
        leader.apply(vec![commit("s-1", 1, 1000), commit("s-2", 2, 2000)]);
        leader.sm.build_blocking(1).unwrap();
        let at = served_snapshot(&leader.sm);
        assert!(at.is_some());

        // Killed before the pointer switched: only the received, synced file is there.
        let follower = tempfile::tempdir().unwrap();
        drop(StateMachineStore::open(follower.path()).unwrap());
        let incoming = follower.path().join("snapshots").join(INSTALLING_SNAPSHOT);
        std::fs::copy(leader.sm.current_snapshot_path(), &incoming).unwrap();
        let sm = StateMachineStore::open(follower.path()).unwrap();
        assert_eq!(sm.applied().unwrap(), at);
        assert_eq!(served_snapshot(&sm), at);
        assert_eq!(sm.digest().unwrap(), leader.sm.digest().unwrap());
        assert!(!incoming.exists());

        // Killed after the pointer switched, before the file was kept as the current snapshot.
        std::fs::remove_file(sm.current_snapshot_path()).unwrap();
        std::fs::copy(leader.sm.current_snapshot_path(), &incoming).unwrap();
        drop(sm);
        let sm = StateMachineStore::open(follower.path()).unwrap();
        assert_eq!(served_snapshot(&sm), at);
        assert!(!incoming.exists());

        // A file cut short by the crash is dropped: the leader sends it again.
        drop(sm);
        std::fs::write(&incoming, b"half a snapshot").unwrap();
        let sm = StateMachineStore::open(follower.path()).unwrap();
        assert_eq!(sm.applied().unwrap(), at);
        assert!(!incoming.exists());
    }

    /// A follower's log and state machine, side by side as a node opens them.
    fn follower_stores(dir: &Path) -> (StateMachineStore, crate::LogStore) {
        let sm = StateMachineStore::open(dir).unwrap();
        let log = crate::LogStore::open(&dir.join("raft-log"))
            .unwrap()
            .purging_behind(sm.purge_gate());
        (sm, log)
    }

    async fn snapshot_file(path: &Path) -> Box<tokio::fs::File> {
        Box::new(tokio::fs::File::open(path).await.unwrap())
    }

    /// Long run seed 15101: openraft hands a received snapshot to the state-machine worker and
    /// purges the log through it from the Raft core at once. A purge made durable first, then
    /// a crash before the install was, left the log past every snapshot the node had.
    #[tokio::test]
    async fn a_purge_through_a_received_snapshot_is_durable_only_after_the_snapshot_is() {
        use futures::FutureExt;
        use openraft::storage::RaftLogStorage;

        let mut leader = Harness::new();
        leader.apply(vec![commit("s-1", 1, 1000), commit("s-2", 2, 2000)]);
        leader.sm.build_blocking(1).unwrap();
        let meta = leader.sm.open_current_snapshot().unwrap().unwrap().meta;
        let at = meta.last_log_id.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let (mut sm, log) = follower_stores(dir.path());
        let mut core = log.clone();
        let mut purge = Box::pin(core.purge(at));
        assert!(
            (&mut purge).now_or_never().is_none(),
            "a purge past the snapshot the state machine serves waits for it"
        );
        // A crash now finds no purge past what the state machine serves.
        assert_eq!(log.last_purged().unwrap(), None);

        let file = snapshot_file(&leader.sm.current_snapshot_path()).await;
        sm.install_snapshot(&meta, file).await.unwrap();
        purge.await.unwrap();
        assert_eq!(log.last_purged().unwrap(), Some(at));
        assert_eq!(sm.current_snapshot_id().unwrap(), Some(at));
        assert_eq!(sm.digest().unwrap(), leader.sm.digest().unwrap());
    }

    #[tokio::test]
    async fn a_failed_install_fails_the_purge_waiting_for_it_and_purges_nothing() {
        use openraft::storage::RaftLogStorage;

        let mut leader = Harness::new();
        leader.apply(vec![commit("s-1", 1, 1000)]);
        leader.sm.build_blocking(1).unwrap();
        let meta = leader.sm.open_current_snapshot().unwrap().unwrap().meta;
        let damaged = leader._dir.path().join("damaged.snap");
        let mut bytes = std::fs::read(leader.sm.current_snapshot_path()).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&damaged, bytes).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let (mut sm, log) = follower_stores(dir.path());
        let mut core = log.clone();
        let purge = tokio::spawn(async move { core.purge(meta.last_log_id.unwrap()).await });
        let installed = sm
            .install_snapshot(&meta, snapshot_file(&damaged).await)
            .await;
        assert!(installed.is_err());
        assert!(
            purge.await.unwrap().is_err(),
            "the Raft core stops, it does not hang"
        );
        assert_eq!(log.last_purged().unwrap(), None);
    }

    #[test]
    fn a_damaged_generation_pointer_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateMachineStore::open(dir.path()).unwrap());
        std::fs::remove_file(dir.path().join("sm/CURRENT")).unwrap();
        assert!(StateMachineStore::open(dir.path()).is_err());
        std::fs::write(dir.path().join("sm/CURRENT"), b"7").unwrap();
        assert!(StateMachineStore::open(dir.path()).is_err());
    }

    const DAY_MS: i64 = callvault_core::time::MILLIS_PER_DAY;

    fn call_id(id: &str) -> callvault_core::CallId {
        callvault_core::CallId::new(id).unwrap()
    }

    fn due(h: &Harness, as_of: i64) -> Vec<String> {
        let db = h.sm.db();
        crate::reads::due_for_expiry(&db, Jurisdiction::Tx, UnixMillis(as_of), &policy(30), 100)
            .unwrap()
            .into_iter()
            .map(|c| c.as_str().to_string())
            .collect()
    }

    fn place_hold(id: &str, issuer: &str, at: i64) -> Command {
        Command::PlaceHold {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(id),
            issuer: issuer.into(),
            agency: format!("{issuer}-agency"),
            case_number: "2026-CR-1".into(),
            reason: "trial".into(),
            review_date: None,
            at: UnixMillis(at),
        }
    }

    fn release(id: &str, hold_id: u64, by: &str) -> Command {
        Command::ReleaseHold {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(id),
            hold_id,
            principal: by.into(),
            agency: format!("{by}-agency"),
            at: UnixMillis(99 * DAY_MS),
        }
    }

    fn expire(as_of: i64, ids: &[&str]) -> Command {
        Command::Expire {
            jurisdiction: Jurisdiction::Tx,
            as_of: UnixMillis(as_of),
            calls: ids.iter().map(|id| call_id(id)).collect(),
        }
    }

    #[test]
    fn expiry_rechecks_deadlines_and_holds_in_apply() {
        let mut h = Harness::new();
        h.apply(vec![commit("old", 1, 0), commit("young", 2, 10 * DAY_MS)]);
        // 30-day policy: at day 31 only the old call is due, whatever the sweeper proposes.
        h.time(99 * DAY_MS);
        assert_eq!(due(&h, 31 * DAY_MS), ["old"]);
        assert_eq!(
            h.apply(vec![expire(31 * DAY_MS, &["old", "young"])]),
            vec![CommandResult::Expired {
                expired: 1,
                skipped: 1
            }]
        );
        assert!(matches!(
            h.call("old").unwrap().lifecycle,
            Lifecycle::Expired { .. }
        ));
        let db = h.sm.db();
        let old_key = crate::keys::call(Jurisdiction::Tx, &call_id("old"));
        assert!(
            Txn::new(&db)
                .get(crate::keys::CF_KEYS, &old_key)
                .unwrap()
                .is_none()
        );
        assert!(
            crate::lifecycle::shred_record(&Txn::new(&db), &old_key)
                .unwrap()
                .is_some()
        );

        // A held call leaves the expiry index and survives any expiry.
        let placed = h.apply(vec![place_hold("young", "da", 11 * DAY_MS)]);
        let CommandResult::HoldPlaced { hold_id } = placed[0] else {
            panic!("{placed:?}")
        };
        assert_eq!(
            hold_id,
            crate::apply::unique_id(
                LogPosition {
                    term: 1,
                    index: h.index
                },
                0
            ),
            "the hold's id is its command's unique position"
        );
        assert!(due(&h, 99 * DAY_MS).is_empty());
        assert_eq!(
            h.apply(vec![expire(99 * DAY_MS, &["young"])]),
            vec![CommandResult::Expired {
                expired: 0,
                skipped: 1
            }]
        );
        assert_eq!(h.counters().held, 1);
        // Only the issuer (or its agency) releases it; then it is due again.
        assert_eq!(
            h.apply(vec![release("young", hold_id, "pd")]),
            vec![CommandResult::Refused(Refusal::NotIssuer)]
        );
        assert_eq!(
            h.apply(vec![release("young", hold_id, "da")]),
            vec![CommandResult::HoldReleased { purged: false }]
        );
        assert_eq!(due(&h, 99 * DAY_MS), ["young"]);
        let c = h.counters();
        assert_eq!((c.live, c.held, c.expired), (1, 0, 1));
    }

    #[test]
    fn a_shred_completes_with_every_receipt_and_only_then() {
        let mut h = Harness::new();
        h.apply(vec![
            commit("a-1", 1, 1000),
            register("(512) 555-0100", 1, 5),
        ]);
        assert_eq!(h.counters().purges_pending, 1);
        let calls = vec![(Jurisdiction::Tx, call_id("a-1"))];
        let meta_receipt = Command::KeysShredded {
            node_id: 1,
            calls: calls.clone(),
            at: UnixMillis(6),
        };
        assert_eq!(
            h.apply(vec![meta_receipt.clone(), meta_receipt]),
            vec![
                CommandResult::ReceiptsRecorded { completed: 0 },
                CommandResult::ReceiptsRecorded { completed: 0 }
            ]
        );
        assert_eq!(
            h.counters().purges_pending,
            1,
            "the chunks are not gone yet"
        );
        let blob_receipt = Command::ChunksCollected {
            shards: vec!["blob-1".into()],
            calls,
            at: UnixMillis(7),
        };
        assert_eq!(
            h.apply(vec![blob_receipt]),
            vec![CommandResult::ReceiptsRecorded { completed: 1 }]
        );
        assert_eq!(h.counters().purges_pending, 0);
        let db = h.sm.db();
        assert!(
            crate::reads::shred_of(&db, Jurisdiction::Tx, &call_id("a-1"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn access_is_decided_recorded_and_charged_per_principal_hour() {
        use crate::command::{AccessDecision, AccessQuota, AccessRequest};
        let mut h = Harness::new();
        h.apply(vec![commit("c-1", 1, 1000)]);
        let access = |id: &str, at: i64, denial: Option<&str>| {
            Command::RecordAccess(AccessRequest {
                jurisdiction: Jurisdiction::Tx,
                call_id: call_id(id),
                principal: "agency-tx".into(),
                case_number: "2026-CR-9".into(),
                reason: "review".into(),
                elevated: false,
                denial: denial.map(str::to_string),
                quota: AccessQuota {
                    calls_per_hour: 2,
                    bytes_per_hour: u64::MAX,
                },
                at: UnixMillis(at),
                recipient: None,
            })
        };
        let decisions: Vec<AccessDecision> = h
            .apply(vec![
                access("c-1", 10, None),
                access("c-1", 20, None),
                access("c-1", 30, None),
                access("c-1", 40, Some("no case number")),
                access("nope", 50, None),
                access("c-1", 3_600_000 + 1, None),
            ])
            .into_iter()
            .map(|r| match r {
                CommandResult::AccessDecided { decision, .. } => decision,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            decisions,
            [
                AccessDecision::Allowed { sealed: false },
                AccessDecision::Allowed { sealed: false },
                AccessDecision::QuotaExceeded,
                AccessDecision::Refused("no case number".into()),
                AccessDecision::NotFound,
                AccessDecision::Allowed { sealed: false },
            ]
        );
    }

    /// A signed, allowed access opens one grant; apply releases it once, never for a denied
    /// access, an unknown one, one too old or a shredded call; a replayed proof is refused.
    #[test]
    fn a_grant_is_released_once_and_a_proof_is_spent_once() {
        use crate::command::{AccessQuota, AccessRequest, Refusal};
        use crate::custody::{KeyRelease, RELEASE_WINDOW_MS};
        use crate::principal_proof::PrincipalProof;
        let mut h = Harness::new();
        h.apply(vec![commit("c-1", 1, 1000), commit("c-2", 2, 1000)]);
        let signed = |id: &str, at: i64, nonce: u8, denial: Option<&str>| Command::Signed {
            proof: PrincipalProof {
                principal: "agency-tx".into(),
                rpc: crate::intents::rpc::PLAYBACK.into(),
                request: id.as_bytes().to_vec(),
                time: UnixMillis(at),
                nonce: [nonce; 16],
                signature: [0; 64],
            },
            command: Box::new(Command::RecordAccess(AccessRequest {
                jurisdiction: Jurisdiction::Tx,
                call_id: call_id(id),
                principal: "agency-tx".into(),
                case_number: "2026-CR-9".into(),
                reason: "review".into(),
                elevated: false,
                denial: denial.map(str::to_string),
                quota: AccessQuota {
                    calls_per_hour: 10,
                    bytes_per_hour: u64::MAX,
                },
                at: UnixMillis(at),
                recipient: Some(vec![7; 1216]),
            })),
        };
        let record = |result: &CommandResult| match result {
            CommandResult::AccessDecided { record, .. } => *record,
            other => panic!("{other:?}"),
        };
        let results = h.apply(vec![
            signed("c-1", 10, 1, None),
            signed("c-1", 10, 1, None),
            signed("c-2", 20, 2, Some("no case number")),
            signed("c-2", 30, 3, None),
        ]);
        assert_eq!(results[1], CommandResult::Refused(Refusal::ProofReplayed));
        let (allowed, denied, to_shred) = (
            record(&results[0]),
            record(&results[2]),
            record(&results[3]),
        );
        let release = |access: u64, at: i64| {
            Command::ReleaseKey(KeyRelease {
                access,
                keys_node: "k1".into(),
                withheld: None,
                at: UnixMillis(at),
            })
        };
        let refused = |r: &CommandResult| match r {
            CommandResult::KeyRelease { refused } => refused.clone(),
            other => panic!("{other:?}"),
        };
        h.apply(vec![Command::FlagPrivileged {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id("c-2"),
            reason: "attorney".into(),
            evidence: String::new(),
            principal: "reviewer".into(),
            at: UnixMillis(40),
        }]);
        let results = h.apply(vec![
            release(allowed, 100),
            release(allowed, 110),
            release(denied, 120),
            release(9_999, 130),
            release(to_shred, 140),
        ]);
        assert_eq!(refused(&results[0]), None, "released");
        for (i, why) in [
            (1, "already released"),
            (2, "no allowed access"),
            (3, "no allowed access"),
            (4, "no readable content"),
        ] {
            let reason = refused(&results[i]).unwrap_or_else(|| panic!("release {i} refused"));
            assert!(reason.contains(why), "{i}: {reason}");
        }
        let db = h.sm.db();
        assert!(
            crate::custody::released_key(&db, allowed)
                .unwrap()
                .is_some()
        );
        assert!(crate::custody::released_key(&db, denied).unwrap().is_none());
        // Too late: past the release window.
        let late = h.apply(vec![signed("c-1", 200, 4, None)]);
        let late_record = record(&late[0]);
        let results = h.apply(vec![release(late_record, 200 + RELEASE_WINDOW_MS + 1)]);
        assert!(refused(&results[0]).is_some_and(|r| r.contains("release window")));
    }

    fn in_session(session: u64, seq: u64, acked_below: u64, command: Command) -> Command {
        Command::Session(crate::command::SessionRequest {
            session,
            seq,
            acked_below,
            command: Box::new(command),
        })
    }

    fn open_session(h: &mut Harness) -> u64 {
        match h.apply(vec![Command::OpenSession]).pop() {
            Some(CommandResult::SessionOpened { session }) => session,
            other => panic!("{other:?}"),
        }
    }

    fn audit_size(h: &Harness) -> u64 {
        let db = h.sm.db();
        crate::audit_log::tree_size(&Txn::new(&db)).unwrap()
    }

    #[test]
    fn a_retried_proposal_answers_its_first_result_and_applies_once() {
        let mut h = Harness::new();
        h.apply(vec![commit("c-1", 1, 1000)]);
        let session = open_session(&mut h);
        let hold = in_session(session, 1, 1, place_hold("c-1", "da", 5));
        let first = h.apply(vec![hold.clone()]);
        let entries = audit_size(&h);
        // The answer was lost; the client sends the same numbered proposal again, twice.
        assert_eq!(h.apply(vec![hold.clone()]), first);
        assert_eq!(h.apply(vec![hold]), first);
        assert_eq!(h.call("c-1").unwrap().holds.len(), 1);
        assert_eq!(audit_size(&h), entries, "a retry is not audited again");
        // A policy change retried after it succeeded is not a version conflict.
        let put = |seq| {
            in_session(
                session,
                seq,
                1,
                Command::PutPolicy {
                    jurisdiction: Jurisdiction::Tx,
                    policy: policy(45),
                    expected_version: 1,
                    principal: "op".into(),
                    at: UnixMillis(9),
                },
            )
        };
        assert_eq!(
            h.apply(vec![put(2)]),
            vec![CommandResult::PolicyPut { version: 2 }]
        );
        assert_eq!(
            h.apply(vec![put(2)]),
            vec![CommandResult::PolicyPut { version: 2 }]
        );
    }

    /// Found by perf in the scale bench: the prune of acknowledged results scanned its session
    /// from the start, stepping over every result it had ever deleted (59% of apply in a
    /// long-lived session). RocksDB counts the deletions an iterator skips: one proposal of an
    /// old session must skip a bounded number, not one per earlier proposal.
    #[test]
    fn pruning_an_old_sessions_results_does_not_walk_what_it_pruned_before() {
        use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};
        let mut h = Harness::new();
        let session = open_session(&mut h);
        let refused = || place_hold("no-such-call", "da", 5);
        for seq in 1..=600 {
            h.apply(vec![in_session(session, seq, seq, refused())]);
        }
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut perf = PerfContext::default();
        perf.reset();
        h.apply(vec![in_session(session, 601, 601, refused())]);
        let skipped = perf.metric(PerfMetric::InternalDeleteSkippedCount);
        set_perf_stats(PerfStatsLevel::Disable);
        assert!(
            skipped < 64,
            "one prune stepped over {skipped} deleted keys"
        );
    }

    #[test]
    fn holds_placed_in_one_batch_entry_get_distinct_ids() {
        let mut h = Harness::new();
        h.apply(vec![commit("c-1", 1, 1000)]);
        let results = h.apply(vec![Command::Batch(vec![
            place_hold("c-1", "da", 5),
            place_hold("c-1", "pd", 6),
        ])]);
        let CommandResult::Batch(results) = &results[0] else {
            panic!("{results:?}")
        };
        let ids: Vec<u64> = results
            .iter()
            .map(|r| match r {
                CommandResult::HoldPlaced { hold_id } => *hold_id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_ne!(ids[0], ids[1]);
        let held: Vec<u64> = h.call("c-1").unwrap().holds.iter().map(|h| h.id).collect();
        assert_eq!(held, ids);
    }

    #[test]
    fn acknowledged_results_are_dropped_and_older_numbers_refused() {
        let mut h = Harness::new();
        h.apply(vec![commit("c-1", 1, 1000)]);
        let session = open_session(&mut h);
        let flag = |seq, acked_below| {
            in_session(
                session,
                seq,
                acked_below,
                Command::FlagPrivileged {
                    jurisdiction: Jurisdiction::Tx,
                    call_id: callvault_core::CallId::new("c-1").unwrap(),
                    reason: "attorney".into(),
                    evidence: "review".into(),
                    principal: "tx-registry".into(),
                    at: UnixMillis(7),
                },
            )
        };
        h.apply(vec![flag(1, 1), flag(2, 1)]);
        // Seq 3 says every answer below 3 arrived: 1 and 2 are dropped, and asking again for 1
        // cannot be a retry.
        h.apply(vec![flag(3, 3)]);
        assert_eq!(
            h.apply(vec![flag(1, 3)]),
            vec![CommandResult::Refused(Refusal::SessionUnknown)]
        );
        // A session nobody opened knows no results.
        assert_eq!(
            h.apply(vec![in_session(session + 1, 1, 1, commit("c-2", 2, 0))]),
            vec![CommandResult::Refused(Refusal::SessionUnknown)]
        );
        assert!(h.call("c-2").is_none());
    }

    #[test]
    fn the_least_recently_used_session_is_evicted_beyond_the_limit() {
        let mut h = Harness::new();
        h.apply(vec![commit("c-1", 1, 1000)]);
        let first = open_session(&mut h);
        let second = open_session(&mut h);
        // Using the first makes the second the least recently used.
        h.apply(vec![in_session(first, 1, 1, place_hold("c-1", "da", 5))]);
        // Fill up to the limit, then open one more.
        let mut to_open = crate::session::MAX_SESSIONS as usize - 2 + 1;
        while to_open > 0 {
            let n = to_open.min(crate::command::MAX_BATCH);
            h.apply(vec![Command::Batch(vec![Command::OpenSession; n])]);
            to_open -= n;
        }
        assert_eq!(
            h.apply(vec![in_session(second, 1, 1, place_hold("c-1", "pd", 6))]),
            vec![CommandResult::Refused(Refusal::SessionUnknown)]
        );
        let retry = h.apply(vec![in_session(first, 1, 1, place_hold("c-1", "da", 5))]);
        assert!(
            matches!(retry[0], CommandResult::HoldPlaced { .. }),
            "{retry:?}"
        );
    }
}
