//! Group commit: concurrent chunk puts on one shard share one fsync.
//!
//! Each put writes its batch to RocksDB without syncing, then waits for a sync of the write-ahead
//! log that *began after its write returned*. Whoever finds no sync running starts one; puts that
//! finish their writes meanwhile wait for it to end and are covered by the next, so under load
//! one fsync makes a whole group durable, and a lone put waits for nobody.
//!
//! RocksDB groups concurrent synced writes by itself, but only up to 1 MiB of batch per group
//! (`max_write_batch_group_size_bytes`): with audio blocks of 256 KiB to 1 MiB that is one to four
//! puts per fsync. Syncing the log separately has no such bound.
//!
//! Correctness rests on one order: a put's number is taken after its write returned, and a sync
//! covers every number taken before it started, so a covered put's record is in the log files the
//! sync flushed. A failed sync covers nothing: its waiters try again and report the error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Shares log syncs among concurrent writers of one database.
#[derive(Debug, Default)]
pub struct GroupCommit {
    /// Writes completed so far (each put's number is this count right after its write).
    written: AtomicU64,
    state: Mutex<SyncState>,
    synced: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every write numbered up to this one is durable.
    durable: u64,
    /// A sync is running.
    syncing: bool,
    /// Syncs that succeeded.
    syncs: u64,
    /// Writes made durable.
    writes: u64,
}

/// How well syncs were shared so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Durable writes.
    pub writes: u64,
    /// Log syncs they took.
    pub syncs: u64,
}

fn lock(state: &Mutex<SyncState>) -> MutexGuard<'_, SyncState> {
    // Counters only: a panic elsewhere cannot leave them in a state worse than stale.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupCommit {
    /// Runs `write` (which must not sync), then returns once a `sync` that started after it
    /// returned has succeeded. `sync` makes every completed write durable (`DB::flush_wal(true)`).
    pub fn commit<E>(
        &self,
        write: impl FnOnce() -> Result<(), E>,
        sync: impl Fn() -> Result<(), E>,
    ) -> Result<(), E> {
        write()?;
        let mine = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = lock(&self.state);
        loop {
            if state.durable >= mine {
                state.writes += 1;
                return Ok(());
            }
            if state.syncing {
                state = self.synced.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.syncing = true;
            let covers = self.written.load(Ordering::SeqCst);
            drop(state);
            let result = sync();
            state = lock(&self.state);
            state.syncing = false;
            self.synced.notify_all();
            result?;
            state.syncs += 1;
            state.durable = state.durable.max(covers);
        }
    }

    /// Writes made durable and the syncs that did it.
    pub fn counts(&self) -> SyncCounts {
        let state = lock(&self.state);
        SyncCounts {
            writes: state.writes,
            syncs: state.syncs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    #[test]
    fn a_lone_write_is_synced_once() {
        let group = GroupCommit::default();
        let syncs = AtomicUsize::new(0);
        for _ in 0..3 {
            group
                .commit(
                    || Ok::<(), ()>(()),
                    || {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    },
                )
                .unwrap();
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 3);
        assert_eq!(
            group.counts(),
            SyncCounts {
                writes: 3,
                syncs: 3
            }
        );
    }

    /// Writers that finish their writes while a sync runs are all covered by the next one.
    #[test]
    fn writes_during_a_sync_share_the_next_one() {
        let group = Arc::new(GroupCommit::default());
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let syncs = Arc::new(AtomicUsize::new(0));
        let sync = {
            let (release_rx, syncs) = (release_rx.clone(), syncs.clone());
            move || {
                // Every sync waits for the test's word, so the test decides who overlaps whom.
                syncs.fetch_add(1, Ordering::SeqCst);
                entered_tx.send(()).unwrap();
                // Bounded, so a wrong count fails the assertions below instead of hanging.
                let _ = release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(std::time::Duration::from_secs(10));
                Ok::<(), ()>(())
            }
        };
        let sync = Arc::new(sync);
        let first = {
            let (group, sync) = (group.clone(), sync.clone());
            std::thread::spawn(move || group.commit(|| Ok(()), || sync()))
        };
        entered_rx.recv().unwrap(); // the first writer's sync is running
        let writes_done = Arc::new(AtomicUsize::new(0));
        let others: Vec<_> = (0..8)
            .map(|_| {
                let (group, sync, done) = (group.clone(), sync.clone(), writes_done.clone());
                std::thread::spawn(move || {
                    group.commit(
                        || {
                            done.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        },
                        || sync(),
                    )
                })
            })
            .collect();
        while writes_done.load(Ordering::SeqCst) < 8 {
            std::thread::yield_now();
        }
        // All eight have written; give them a moment to queue behind the running sync.
        std::thread::sleep(std::time::Duration::from_millis(50));
        release_tx.send(()).unwrap(); // the first sync ends
        entered_rx.recv().unwrap(); // one of the eight starts the next
        release_tx.send(()).unwrap();
        first.join().unwrap().unwrap();
        for t in others {
            t.join().unwrap().unwrap();
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 2, "nine writes, two syncs");
        assert_eq!(
            group.counts(),
            SyncCounts {
                writes: 9,
                syncs: 2
            }
        );
    }

    #[test]
    fn a_failed_sync_makes_nothing_durable() {
        let group = GroupCommit::default();
        let failing = group.commit(|| Ok(()), || Err("disk gone"));
        assert_eq!(failing, Err("disk gone"));
        // The next write's sync covers the failed one's record too, but only the new put
        // reports success: the failed put already returned its error.
        assert_eq!(group.commit(|| Ok(()), || Ok::<(), &str>(())), Ok(()));
        assert_eq!(
            group.counts(),
            SyncCounts {
                writes: 1,
                syncs: 1
            }
        );
    }

    #[test]
    fn a_failed_write_is_not_synced() {
        let group = GroupCommit::default();
        let result = group.commit(|| Err("full"), || panic!("nothing to sync"));
        assert_eq!(result, Err("full"));
        assert_eq!(group.counts(), SyncCounts::default());
    }
}
