//! The Raft log on RocksDB: entries in their own column family keyed by big-endian index, the
//! vote, the committed id and the purge point in another.
//!
//! An append is one write batch, readable as soon as `append` returns; a syncer thread then
//! fsyncs the write-ahead log and only then tells openraft the entries are flushed. Appends that
//! arrive while an fsync is running share the next one (group commit), and openraft's core never
//! waits on the disk.
//!
//! A purge is made durable only behind the snapshot the state machine would serve after a crash
//! ([`PurgeGate`]): openraft purges through a received snapshot before the state machine has
//! installed it.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use callvault_proto::v1 as pb;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader, StorageIOError};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

use crate::convert::{self, entry_from_pb, entry_to_pb, from_disk, to_disk};
use crate::purge_gate::PurgeGate;
use crate::storage::open_db;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const CF_LOGS: &str = "logs";
const CF_LOG_META: &str = "log_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

/// The Raft log. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: Arc<Syncer>,
    /// What a purge waits for; `None` only for a log without a state machine beside it
    /// (openraft's storage suite, which purges the log on its own).
    gate: Option<PurgeGate>,
}

/// The syncer thread and the queue into it. The thread holds the database; the last handle of
/// the log stops it and waits for it, so the database is closed before that drop returns. A
/// process that exits while a RocksDB database is still closing in another thread aborts
/// ("pthread lock: Invalid argument") as C++ static destructors run under it.
struct Syncer {
    queue: Option<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// fsyncs the WAL for every waiting append, then reports them flushed, in order.
fn sync_loop(db: Arc<DB>, pending: std::sync::mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut waiting = vec![first];
        waiting.extend(pending.try_iter());
        let result = db.flush_wal(true);
        for callback in waiting {
            callback.log_io_completed(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            });
        }
    }
}

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    io_error(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    io_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// Opens the log at `dir`. A directory that exists must hold a readable database: a missing
    /// or damaged one is an error, never a fresh empty log.
    pub fn open(dir: &Path) -> Result<Self, crate::storage::OpenError> {
        let mut logs = Options::default();
        logs.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_LOGS, logs),
            ColumnFamilyDescriptor::new(CF_LOG_META, Options::default()),
        ];
        let db = Arc::new(open_db(dir, cfs)?);
        let (queue, pending) = std::sync::mpsc::channel();
        let sync_db = Arc::clone(&db);
        let thread = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(sync_db, pending))
            .map_err(|source| crate::storage::OpenError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let syncer = Arc::new(Syncer {
            queue: Some(queue),
            thread: Some(thread),
        });
        Ok(LogStore {
            db,
            syncer,
            gate: None,
        })
    }

    /// This log purges nothing past what `gate` says the state machine can serve after a crash.
    /// Every log that runs beside a state machine must have one (a node's does).
    pub fn purging_behind(mut self, gate: PurgeGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The last purged entry as the disk has it.
    pub fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        self.read_log_id(KEY_PURGED)
    }

    /// Makes purged entries physically unreadable: flushes the log (its write-ahead log, which
    /// carried the entries, becomes obsolete) and rewrites the entries' range to the bottom level,
    /// dropping them and the range tombstone. Call after the log was purged through `index`.
    pub fn compact_purged(&self, index: u64) -> Result<(), rocksdb::Error> {
        let logs = self.cf(CF_LOGS);
        let meta = self.cf(CF_LOG_META);
        self.db
            .flush_cfs_opt(&[logs, meta], &rocksdb::FlushOptions::default())?;
        self.db.flush_wal(true)?;
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        let end = index_key(index.saturating_add(1));
        self.db
            .compact_range_cf_opt(logs, None::<&[u8]>, Some(&end[..]), &options);
        Ok(())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn synced() -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        options
    }

    fn read_log_id(&self, key: &[u8]) -> Result<Option<LogId>, StorageError> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_LOG_META), key)
            .map_err(read_err)?
        else {
            return Ok(None);
        };
        let id: pb::LogId = from_disk("log id", &bytes).map_err(read_err)?;
        Ok(Some(convert::log_id_from_pb(&id).map_err(read_err)?))
    }

    fn put_meta(&self, key: &[u8], value: Vec<u8>) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(self.cf(CF_LOG_META), key, value, &Self::synced())
            .map_err(write_err)
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut iter = self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(read_err)?;
                Ok(Some(decode_entry(&value)?.log_id))
            }
        }
    }

    /// The on-disk size of the log, for metrics.
    pub fn approximate_size(&self) -> u64 {
        self.db
            .property_int_value_cf(self.cf(CF_LOGS), "rocksdb.total-sst-files-size")
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError> {
    let message: pb::LogEntry = from_disk("log entry", bytes).map_err(read_err)?;
    entry_from_pb(&message).map_err(read_err)
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_LOGS),
            IteratorMode::From(&index_key(start), Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| read_err(std::io::Error::other("log key is not 8 bytes")))?,
            );
            if !range.contains(&index) {
                break;
            }
            entries.push(decode_entry(&value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, to_disk(&convert::vote_to_pb(vote)))
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_LOG_META), KEY_VOTE)
            .map_err(read_err)?
        else {
            return Ok(None);
        };
        let vote: pb::RaftVote = from_disk("vote", &bytes).map_err(read_err)?;
        Ok(Some(convert::vote_from_pb(&vote).map_err(read_err)?))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        match committed {
            Some(id) => self.put_meta(KEY_COMMITTED, to_disk(&convert::log_id_to_pb(&id))),
            None => self
                .db
                .delete_cf_opt(self.cf(CF_LOG_META), KEY_COMMITTED, &Self::synced())
                .map_err(write_err),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_log_id(KEY_COMMITTED)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(
                self.cf(CF_LOGS),
                index_key(entry.log_id.index),
                to_disk(&entry_to_pb(&entry)),
            );
        }
        // Readable now (memtable, WAL in the OS); durable once the syncer's fsync returns.
        if let Err(e) = self.db.write(batch) {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(write_err(e));
        }
        self.syncer
            .queue
            .as_ref()
            .expect("the queue lives until the last handle drops")
            .send(callback)
            .map_err(|_| write_err(std::io::Error::other("the log syncer stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Removes [log_id.index, ∞).
        let from = index_key(log_id.index);
        let to = index_key(u64::MAX);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), from, to);
        batch.delete_cf(self.cf(CF_LOGS), to);
        self.db.write_opt(batch, &Self::synced()).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // openraft purges through a received snapshot while the state machine still installs
        // it: wait until a crash would leave the state machine serving that snapshot, or the
        // next start finds the log past every snapshot it has.
        if let Some(gate) = &self.gate {
            gate.wait_for(&log_id).await.map_err(|why| {
                write_err(std::io::Error::other(format!(
                    "purge through {log_id}: {why}"
                )))
            })?;
        }
        // Records the purge point first so a crash between the two writes never shows a log
        // whose start is unexplained.
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_LOG_META),
            KEY_PURGED,
            to_disk(&convert::log_id_to_pb(&log_id)),
        );
        batch.delete_range_cf(
            self.cf(CF_LOGS),
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.db
            .write_opt(batch, &Self::synced())
            .map_err(write_err)?;
        crate::failpoint!("log-purge-after-write");
        Ok(())
    }
}
