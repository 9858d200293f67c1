//! This meta node's part in cluster time: it attests its wall clock through the log at a steady
//! pace (voters only; `apply` ignores anyone else), and it reports how every voter's clock
//! compares with the cluster's — as metrics, and in its log when its own clock is off by more
//! than the bound, since then it does not lead sweeps.
//!
//! The attester runs whether or not the lifecycle workers do: reads that check a deadline need
//! the cluster time to move.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callvault_core::clock::{VoterClock, voter_clocks};
use callvault_meta::client::MetaClient;
use callvault_meta::retention_command::RetentionCommand;
use callvault_meta::{Command, MetaNode};
use tokio::sync::watch;

use crate::ingest::now;

/// How often a node whose own clock is off repeats its warning.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// How soon an attestation is retried while the cluster has no time or the last one failed.
const RETRY: Duration = Duration::from_millis(250);

/// The attester and reporter of one meta node.
pub struct ClockAttester {
    node: Arc<MetaNode>,
    node_id: u64,
    meta: MetaClient,
    pace: Duration,
    bound_ms: i64,
}

impl ClockAttester {
    /// Attests every `pace` through `meta`, flagging clocks off by more than `bound`.
    pub fn new(
        node: Arc<MetaNode>,
        node_id: u64,
        meta: MetaClient,
        pace: Duration,
        bound: Duration,
    ) -> Self {
        ClockAttester {
            node,
            node_id,
            meta,
            pace,
            bound_ms: i64::try_from(bound.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Runs until `stop` turns true. Attests at the steady pace once the cluster has a time;
    /// until then (a cluster forming, a voter whose attestation failed) it retries within
    /// [`RETRY`], so a new cluster can count deadlines within a second or so.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut last_warning: Option<Instant> = None;
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let attested = !self.is_voter() || self.attest().await;
            let clocks = self.clocks();
            let has_time = matches!(&clocks, Ok(c) if c.iter().any(|c| c.offset_ms.is_some()));
            wait = if attested && has_time {
                self.pace
            } else {
                self.pace.min(RETRY)
            };
            match clocks {
                Ok(clocks) => self.report(&clocks, &mut last_warning),
                Err(e) => tracing::warn!(error = %e, "cannot read the cluster clock"),
            }
        }
    }

    /// Proposes this voter's attestation; false when it was not committed.
    async fn attest(&self) -> bool {
        let attest = Command::Retention(RetentionCommand::AttestTime {
            node_id: self.node_id,
            wall: now(),
        });
        match self.meta.propose(&attest).await {
            Ok(_) => true,
            Err(status) => {
                tracing::debug!(%status, "clock attestation not committed; retrying soon");
                false
            }
        }
    }

    fn is_voter(&self) -> bool {
        self.node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.node_id)
    }

    /// Every voter's clock against the cluster time, as this node's state machine has it.
    pub fn clocks(&self) -> anyhow::Result<Vec<VoterClock>> {
        let view = callvault_meta::clock::view(&self.node.state_machine.db())?;
        Ok(voter_clocks(
            &view.attestations,
            &view.voters,
            view.cluster_time,
            self.bound_ms,
        ))
    }

    fn report(&self, clocks: &[VoterClock], last_warning: &mut Option<Instant>) {
        for clock in clocks {
            callvault_meta::metrics::voter_clock(clock.node_id, clock.offset_ms, clock.suspect);
        }
        let Some(own) = clocks.iter().find(|c| c.node_id == self.node_id) else {
            return;
        };
        if own.suspect && last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last_warning = Some(Instant::now());
            tracing::warn!(
                alert = "clock_skew",
                offset_ms = own.offset_ms,
                bound_ms = self.bound_ms,
                "this node's clock is off the cluster time by more than the bound: it does not \
                 lead sweeps until it is corrected"
            );
        }
    }
}
