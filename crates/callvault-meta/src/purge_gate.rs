//! How far the Raft log may be purged: through the snapshot the state machine would serve after
//! a crash, and no further.
//!
//! openraft 0.9 hands a received snapshot to the state-machine worker and, in the same step,
//! purges the log through it from the Raft core (`Command::PurgeLog` waits for nothing; see
//! `following_handler::install_full_snapshot`). A log store that makes that purge durable at
//! once can outlive, in a crash, an install that has not reached the disk yet: the log then
//! starts past every snapshot the state machine has, and openraft refuses to start
//! (`purge_upto <= snapshot_last_log_id`). So the state machine publishes here the snapshot it
//! holds durably, and the log store's purge waits until that covers it. Nothing the log holds
//! is ever dropped to get there; the Raft core simply does not move on (no later append, no
//! later `save_committed`) until the snapshot is safe.

use std::sync::Arc;

use tokio::sync::watch;

use crate::types::LogId;

#[derive(Debug, Clone, PartialEq)]
enum Served {
    /// A crash now leaves the state machine serving a snapshot through this entry.
    Through(Option<LogId>),
    /// The state machine failed: it will install nothing more in this process.
    Failed(String),
}

/// The snapshot the state machine can serve after a crash, and the wait for it. Cheap to clone:
/// clones share one state (the state machine writes it, the log store reads it).
#[derive(Debug, Clone)]
pub struct PurgeGate {
    served: Arc<watch::Sender<Served>>,
}

impl PurgeGate {
    /// A gate at the snapshot the state machine holds durably now (`None`: none yet).
    pub fn new(durable: Option<LogId>) -> Self {
        PurgeGate {
            served: Arc::new(watch::Sender::new(Served::Through(durable))),
        }
    }

    /// The state machine now holds a snapshot through `durable` that survives a crash. Never
    /// moves back.
    pub fn advance(&self, durable: Option<LogId>) {
        self.served.send_if_modified(|served| match served {
            Served::Through(at) if index(&durable) > index(at) => {
                *at = durable;
                true
            }
            _ => false,
        });
    }

    /// The state machine failed; every wait, now and later, ends with `why`, so the Raft core
    /// stops with an error instead of waiting for an install that will never come.
    pub fn fail(&self, why: impl Into<String>) {
        let why = why.into();
        self.served.send_if_modified(|served| match served {
            Served::Failed(_) => false,
            _ => {
                *served = Served::Failed(why);
                true
            }
        });
    }

    /// The snapshot a crash now would leave the state machine serving, if it has not failed.
    pub fn durable(&self) -> Option<LogId> {
        match &*self.served.borrow() {
            Served::Through(at) => *at,
            Served::Failed(_) => None,
        }
    }

    /// Resolves once a crash can no longer leave the state machine behind `upto`: at once for a
    /// purge within its durable snapshot, else when the install that covers it is durable.
    pub async fn wait_for(&self, upto: &LogId) -> Result<(), String> {
        let mut watcher = self.served.subscribe();
        let served = watcher
            .wait_for(|served| match served {
                Served::Through(at) => index(at) >= Some(upto.index),
                Served::Failed(_) => true,
            })
            .await
            .map_err(|_| "the state machine is gone".to_string())?;
        match &*served {
            Served::Through(_) => Ok(()),
            Served::Failed(why) => Err(why.clone()),
        }
    }
}

/// Committed log ids at one index are one entry, so the index orders them (`LeaderId`s of one
/// term and two nodes do not compare).
fn index(id: &Option<LogId>) -> Option<u64> {
    id.as_ref().map(|id| id.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn at(index: u64) -> LogId {
        openraft::testing::log_id(1, 1, index)
    }

    #[test]
    fn a_purge_within_the_durable_snapshot_passes_and_one_past_it_waits_for_it() {
        let gate = PurgeGate::new(Some(at(10)));
        assert_eq!(gate.wait_for(&at(10)).now_or_never(), Some(Ok(())));
        let twenty = at(20);
        let mut past = Box::pin(gate.wait_for(&twenty));
        assert!((&mut past).now_or_never().is_none());
        gate.advance(Some(at(15)));
        assert!((&mut past).now_or_never().is_none());
        gate.advance(Some(at(20)));
        assert_eq!(past.now_or_never(), Some(Ok(())));
        gate.advance(Some(at(5)));
        assert_eq!(gate.durable(), Some(at(20)), "never moves back");
    }

    #[test]
    fn a_failed_state_machine_ends_every_wait_with_its_error() {
        let gate = PurgeGate::new(None);
        let one = at(1);
        let mut waiting = Box::pin(gate.wait_for(&one));
        assert!((&mut waiting).now_or_never().is_none());
        gate.fail("install failed: disk full");
        assert_eq!(
            waiting.now_or_never(),
            Some(Err("install failed: disk full".to_string()))
        );
        assert!(gate.wait_for(&at(1)).now_or_never().unwrap().is_err());
    }
}
