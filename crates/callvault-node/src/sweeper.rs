//! The retention sweeper, on the sweep leader only: the Raft leader while its clock is within
//! the bound of the cluster time, otherwise the lowest-id voter whose clock is. Each tick it
//!
//! - expires, per jurisdiction at its policy's interval, the recordings and then the call-detail
//!   records due at the **cluster time** (never this node's clock: `apply` refuses a later one);
//! - continues every registration's purge with its next page, so no one has to register again;
//! - asks that pending changes whose notice has ended in cluster time take effect;
//! - reports what is overdue: recordings and call-detail records past deadline plus an interval,
//!   holds past their review date (metrics; holds also in the log — they are never released by
//!   the system).
//!
//! Every decision is re-checked in `apply`; a node that wrongly believes it leads sweeps wastes
//! proposals, nothing more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callvault_core::clock::{sweep_leader, voter_clocks};
use callvault_core::retention::recording_deadline;
use callvault_core::{CallId, Jurisdiction, RetentionPolicy, UnixMillis};
use callvault_meta::client::MetaClient;
use callvault_meta::command::MAX_EXPIRE_BATCH;
use callvault_meta::reads::{self, ReadError};
use callvault_meta::retention_command::{RetentionCommand, RetentionResult};
use callvault_meta::{Command, CommandResult, MetaNode};
use rocksdb::DB;

use crate::config::LifecycleSection;
use crate::lifecycle::off_runtime;

/// Most `Expire` proposals per jurisdiction per sweep, so one sweep cannot starve the others;
/// the rest is taken at the next tick.
const MAX_BATCHES_PER_SWEEP: usize = 100;
/// Most registrations and due changes one tick follows up.
const MAX_FOLLOW_UPS: usize = 64;
/// How long one tick keeps paging through purges before it sweeps (the rest continues at the
/// next tick).
const PURGE_BUDGET: Duration = Duration::from_secs(10);

/// When the sweeper last swept each jurisdiction on this node, and what it last logged.
#[derive(Default)]
pub struct SweepState {
    last: HashMap<Jurisdiction, Instant>,
    holds_logged: HashMap<Jurisdiction, u64>,
}

/// The sweeper of one meta node.
pub struct Sweeper {
    node: Arc<MetaNode>,
    node_id: u64,
    meta: MetaClient,
    config: LifecycleSection,
}

/// Which expiry a sweep step proposes.
#[derive(Clone, Copy)]
enum Sweep {
    Recordings,
    CallDetails,
}

impl Sweeper {
    /// The sweeper of `node`, proposing through `meta`.
    pub fn new(
        node: Arc<MetaNode>,
        node_id: u64,
        meta: MetaClient,
        config: LifecycleSection,
    ) -> Self {
        Sweeper {
            node,
            node_id,
            meta,
            config,
        }
    }

    /// One tick. A node that does not lead sweeps forgets its history, so it sweeps at once the
    /// first time it does.
    pub async fn tick(&self, mut state: SweepState) -> SweepState {
        let db = self.node.state_machine.db();
        let Some(as_of) = self.leads_sweeps(&db) else {
            state.last.clear();
            return state;
        };
        self.continue_purges(&db).await;
        self.effect_due_changes(&db, as_of).await;
        let mut lag = Duration::ZERO;
        let mut pending_purges = 0;
        for &jurisdiction in Jurisdiction::ALL {
            let Ok(Some(policy)) = reads::policy(&db, jurisdiction, 0) else {
                continue;
            };
            let interval = Duration::from_secs(u64::from(policy.policy.sweep_interval_seconds));
            if state
                .last
                .get(&jurisdiction)
                .is_none_or(|at| at.elapsed() >= interval)
            {
                let recordings =
                    self.sweep(&db, jurisdiction, &policy.policy, as_of, Sweep::Recordings);
                let complete = recordings.await
                    && self
                        .sweep(&db, jurisdiction, &policy.policy, as_of, Sweep::CallDetails)
                        .await;
                if complete {
                    state.last.insert(jurisdiction, Instant::now());
                }
            }
            let status = off_runtime(db.clone(), move |db| {
                Ok(reads::sweep_status(db, jurisdiction, as_of)?)
            });
            if let Ok(status) = status.await {
                pending_purges += status.counters.purges_pending;
                if let Some(oldest) = status.oldest_live_started_at {
                    let behind = as_of.0 - recording_deadline(oldest, &policy.policy).0;
                    lag = lag.max(Duration::from_millis(behind.max(0) as u64));
                }
                report(jurisdiction, &status, &mut state);
            }
        }
        callvault_meta::metrics::sweep_lag(lag);
        callvault_meta::metrics::pending_purges(pending_purges);
        state
    }

    /// The cluster time, when this node leads sweeps.
    fn leads_sweeps(&self, db: &DB) -> Option<UnixMillis> {
        let view = callvault_meta::clock::view(db).ok()?;
        let bound = i64::try_from(self.config.max_clock_skew_ms).unwrap_or(i64::MAX);
        let clocks = voter_clocks(&view.attestations, &view.voters, view.cluster_time, bound);
        let raft_leader = self.node.raft.metrics().borrow().current_leader;
        (sweep_leader(raft_leader, &clocks) == Some(self.node_id))
            .then_some(view.cluster_time)
            .flatten()
    }

    /// Proposes expiries of what is due at `as_of`, in batches, until nothing is left or the
    /// sweep's budget is spent; false when a proposal failed (the next tick retries).
    async fn sweep(
        &self,
        db: &Arc<DB>,
        jurisdiction: Jurisdiction,
        policy: &RetentionPolicy,
        as_of: UnixMillis,
        what: Sweep,
    ) -> bool {
        let batch = self.config.expire_batch.clamp(1, MAX_EXPIRE_BATCH);
        let mut expired = 0u64;
        for _ in 0..MAX_BATCHES_PER_SWEEP {
            let policy = policy.clone();
            let due = off_runtime(db.clone(), move |db| {
                Ok(due(db, jurisdiction, as_of, &policy, batch, what)?)
            });
            let due = match due.await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "sweeper cannot read the expiry index");
                    return false;
                }
            };
            if due.is_empty() {
                break;
            }
            let full = due.len() == batch;
            let command = match what {
                Sweep::Recordings => Command::Expire {
                    jurisdiction,
                    as_of,
                    calls: due,
                },
                Sweep::CallDetails => Command::Retention(RetentionCommand::ExpireCallDetails {
                    jurisdiction,
                    as_of,
                    calls: due,
                }),
            };
            match self.meta.propose(&command).await {
                Ok((_, CommandResult::Expired { expired: n, .. })) => expired += u64::from(n),
                Ok((_, other)) => {
                    tracing::warn!(?other, "expiry refused");
                    return false;
                }
                Err(status) => {
                    tracing::warn!(%status, "expiry not committed; the next sweep retries");
                    return false;
                }
            }
            if !full {
                break;
            }
        }
        if expired > 0 {
            tracing::info!(
                jurisdiction = jurisdiction.code(),
                expired,
                as_of = as_of.0,
                what = match what {
                    Sweep::Recordings => "recordings",
                    Sweep::CallDetails => "call-detail records",
                },
                "sweep expired"
            );
        }
        true
    }

    /// Proposes the next pages of every registration still purging, for up to [`PURGE_BUDGET`]
    /// per tick: a large purge runs page after page without waiting for ticks, and still lets
    /// the sweep run.
    async fn continue_purges(&self, db: &DB) {
        let started = Instant::now();
        while started.elapsed() < PURGE_BUDGET {
            let Ok(purging) = callvault_meta::purges::in_progress(db, None, MAX_FOLLOW_UPS) else {
                return;
            };
            if purging.is_empty() {
                return;
            }
            for purge in purging {
                if !self.continue_purge(&purge).await {
                    return;
                }
            }
        }
    }

    /// One page of one registration's purge; false when it was not committed (the next tick
    /// retries).
    async fn continue_purge(&self, purge: &callvault_meta::purges::PurgeInProgress) -> bool {
        let command = Command::Retention(RetentionCommand::ContinuePurge {
            jurisdiction: purge.jurisdiction,
            fingerprint: purge.fingerprint,
        });
        match self.meta.propose(&command).await {
            Ok((_, CommandResult::Retention(RetentionResult::PurgeContinued { purged, done }))) => {
                tracing::info!(
                    jurisdiction = purge.jurisdiction.code(),
                    purged,
                    done,
                    so_far = purge.progress.purged + purged,
                    "a registration's purge continued"
                );
                true
            }
            Ok((_, other)) => {
                tracing::warn!(?other, "purge continuation refused");
                false
            }
            Err(status) => {
                tracing::warn!(%status, "purge continuation not committed");
                false
            }
        }
    }

    /// Asks that every change whose notice has ended in cluster time take effect.
    async fn effect_due_changes(&self, db: &DB, as_of: UnixMillis) {
        let Ok(open) = callvault_meta::approvals::open_changes(db, None, MAX_FOLLOW_UPS) else {
            return;
        };
        for change in open
            .iter()
            .filter(|c| c.approval.effect(Some(as_of)).is_some())
        {
            let command = Command::Retention(RetentionCommand::EffectChange {
                change_id: change.id,
            });
            match self.meta.propose(&command).await {
                Ok((_, result)) => tracing::info!(
                    change = change.id,
                    kind = change.kind.name(),
                    jurisdiction = change.approval.jurisdiction.code(),
                    ?result,
                    "a change whose notice ended took effect"
                ),
                Err(status) => {
                    tracing::warn!(%status, "change not effected; the next tick retries")
                }
            }
        }
    }
}

fn due(
    db: &DB,
    jurisdiction: Jurisdiction,
    as_of: UnixMillis,
    policy: &RetentionPolicy,
    limit: usize,
    what: Sweep,
) -> Result<Vec<CallId>, ReadError> {
    match what {
        Sweep::Recordings => reads::due_for_expiry(db, jurisdiction, as_of, policy, limit),
        Sweep::CallDetails => Ok(callvault_meta::details::due(
            db,
            jurisdiction,
            as_of,
            policy,
            limit,
        )?),
    }
}

/// Metrics of what is overdue, and a log line when the holds past review change.
fn report(jurisdiction: Jurisdiction, status: &reads::JurisdictionStatus, state: &mut SweepState) {
    callvault_meta::metrics::overdue_recordings(jurisdiction, status.overdue);
    callvault_meta::metrics::retention_alarms(
        jurisdiction,
        status.details_overdue,
        status.holds_past_review,
    );
    let logged = state.holds_logged.entry(jurisdiction).or_default();
    if status.holds_past_review != *logged {
        *logged = status.holds_past_review;
        if status.holds_past_review > 0 {
            tracing::warn!(
                alert = "holds_past_review",
                jurisdiction = jurisdiction.code(),
                holds = status.holds_past_review,
                "holds are past their review date; only their issuers may release them"
            );
        }
    }
    if status.details_overdue > 0 || status.overdue > 0 {
        tracing::warn!(
            alert = "retention_overdue",
            jurisdiction = jurisdiction.code(),
            recordings = status.overdue,
            call_details = status.details_overdue,
            "records are past their deadline plus one sweep interval"
        );
    }
}
