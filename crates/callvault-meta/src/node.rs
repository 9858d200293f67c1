//! A running metadata-store member: its stores, its Raft instance and its services.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};

use crate::log_store::LogStore;
use crate::network::{ChannelPool, NetworkFactory};
use crate::service::MetaService;
use crate::state_machine::StateMachineStore;
use crate::storage::{OpenError, write_atomically};
use crate::types::{NodeId, Raft};

/// What a meta member needs to start.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// This member's id, unique in the cluster, never reused.
    pub node_id: NodeId,
    /// Where its log, state machine and snapshots live.
    pub data_dir: PathBuf,
    /// `host:port` where peers reach its internal gRPC endpoint.
    pub advertise_addr: String,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout range.
    pub election_timeout_min_ms: u64,
    /// Election timeout range.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers catch up from the
    /// log instead of a snapshot.
    pub log_entries_kept_after_snapshot: u64,
    /// How this member authenticates to the others: role `meta` (see
    /// `callvault_proto::identity`).
    pub peer: callvault_proto::identity::Credential,
    /// The principals whose proofs this member checks (the same principals file as the api's).
    pub principals: crate::principal::Principals,
    /// The per-principal limits this member charges proposals against.
    pub limits: crate::principal_proof::Limits,
    /// The cluster's index key: call tombstones are filed under hashes keyed by it. Every member
    /// must have the same (the state machine refuses to apply with another).
    pub id_key: [u8; 32],
    /// How far a voter's clock may be off the cluster time before status flags it.
    pub clock_bound_ms: i64,
}

impl MetaConfig {
    /// Defaults suited to a LAN: 250 ms heartbeats, 1–2 s elections, a snapshot per 50,000
    /// entries keeping 10,000 behind it.
    pub fn new(node_id: NodeId, data_dir: PathBuf, advertise_addr: String) -> Self {
        MetaConfig {
            node_id,
            data_dir,
            advertise_addr,
            heartbeat_ms: 250,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_after_entries: 50_000,
            log_entries_kept_after_snapshot: 10_000,
            peer: callvault_proto::identity::Credential::none(),
            principals: crate::principal::Principals::default(),
            limits: crate::principal_proof::Limits::default(),
            id_key: [0; 32],
            clock_bound_ms: crate::service::DEFAULT_CLOCK_BOUND_MS,
        }
    }
}

/// Why a meta member did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A store did not open.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The data directory belongs to another node id.
    #[error(
        "{path} belongs to node {found}, not {expected}: each node keeps its own data directory"
    )]
    WrongNode {
        /// The identity file.
        path: PathBuf,
        /// The id in it.
        found: String,
        /// The configured id.
        expected: NodeId,
    },
    /// openraft refused the configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The log starts past every state the state machine has: the entries between are on no
    /// disk of this member, so it cannot rejoin as it is.
    #[error(
        "the Raft log is purged through {purged} but the state machine serves a snapshot only \
         through {served} (a crash on a build older than the purge gate left it so): this volume \
         cannot rejoin; move its data directory aside and start the node empty (with bootstrap \
         it rejoins under a new incarnation, as a learner until caught up)"
    )]
    PurgedPastSnapshot {
        /// The log's last purged entry.
        purged: String,
        /// The current snapshot's last entry.
        served: String,
    },
}

/// openraft panics on such a volume (`purge_upto <= snapshot_last_log_id`) and the member would
/// serve on without a Raft core; refuse it by name instead. Purges wait for installs
/// ([`crate::purge_gate`]), so only a volume from an older build can be like this.
fn refuse_a_log_purged_past_the_snapshot(
    log: &LogStore,
    state_machine: &StateMachineStore,
) -> Result<(), StartError> {
    let read = |e: crate::types::StorageError| StartError::Raft(e.to_string());
    let purged = log.last_purged().map_err(read)?;
    // Without a snapshot openraft builds one from the state machine at start.
    let served = match state_machine.current_snapshot_id().map_err(read)? {
        Some(id) => Some(id),
        None => state_machine.applied().map_err(read)?,
    };
    let index = |id: &Option<crate::types::LogId>| id.as_ref().map(|id| id.index);
    if index(&purged) > index(&served) {
        let show = |id: Option<crate::types::LogId>| id.map_or("nothing".into(), |i| i.to_string());
        return Err(StartError::PurgedPastSnapshot {
            purged: show(purged),
            served: show(served),
        });
    }
    Ok(())
}

/// A running meta member.
pub struct MetaNode {
    /// The Raft handle.
    pub raft: Raft,
    /// The state machine, for local reads.
    pub state_machine: StateMachineStore,
    /// The log, for metrics.
    pub log: LogStore,
    /// The gRPC services.
    pub service: MetaService,
}

impl MetaNode {
    /// Opens the stores under `config.data_dir` (recovering whatever is there) and starts Raft.
    /// It serves nothing by itself: add [`MetaNode::service`]'s servers to a tonic server.
    pub async fn start(config: MetaConfig) -> Result<Arc<Self>, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| OpenError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let identity = config.data_dir.join("node-id");
        match std::fs::read_to_string(&identity) {
            Ok(found) if found.trim() == config.node_id.to_string() => {}
            Ok(found) => {
                return Err(StartError::WrongNode {
                    path: identity,
                    found: found.trim().to_string(),
                    expected: config.node_id,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if config.data_dir.join("raft-log").exists() {
                    return Err(StartError::Open(OpenError::Io {
                        path: identity,
                        source: std::io::Error::other("missing beside existing data: damaged"),
                    }));
                }
                write_atomically(&identity, config.node_id.to_string().as_bytes())?;
            }
            Err(source) => {
                return Err(OpenError::Io {
                    path: identity,
                    source,
                }
                .into());
            }
        }

        let incarnation = crate::member::load_or_create_incarnation(&config.data_dir)?;
        let state_machine = StateMachineStore::open_keyed(&config.data_dir, config.id_key)?;
        let log = LogStore::open(&config.data_dir.join("raft-log"))?
            .purging_behind(state_machine.purge_gate());
        refuse_a_log_purged_past_the_snapshot(&log, &state_machine)?;
        let raft_config = Config {
            cluster_name: "callvault".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries),
            max_in_snapshot_log_to_keep: config.log_entries_kept_after_snapshot,
            // Entries per append RPC; batch entries already carry many calls each, and the network
            // splits an RPC that would exceed the message bound.
            max_payload_entries: 256,
            snapshot_max_chunk_size: 2 << 20,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let pool = ChannelPool::new(config.peer.bearer());
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NetworkFactory::new(pool.clone()),
            log.clone(),
            state_machine.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        // Stops by itself when Raft reports `Shutdown`, releasing its handles on the stores.
        crate::metrics::watch_raft(
            config.node_id,
            raft.metrics(),
            log.clone(),
            state_machine.clone(),
        );
        let service = MetaService::new(
            raft.clone(),
            state_machine.clone(),
            pool,
            config.node_id,
            crate::member::MetaMember::new(config.advertise_addr.clone(), incarnation),
            crate::gate::ProposalGate::new(config.principals.clone(), config.limits),
        )
        .with_clock_bound(config.clock_bound_ms);
        Ok(Arc::new(MetaNode {
            raft,
            state_machine,
            log,
            service,
        }))
    }

    /// Resolves, with the error, once the Raft core has stopped on its own: a storage error (a
    /// full or failing disk) or a panic. A member in that state can neither vote nor serve and
    /// never comes back by itself, so its process must stop and let a supervisor restart it.
    /// Never resolves while Raft runs or after a clean [`MetaNode::shutdown`].
    pub async fn failed(&self) -> openraft::error::Fatal<NodeId> {
        let mut metrics = self.raft.metrics();
        loop {
            let state = metrics.borrow_and_update().running_state.clone();
            match state {
                Err(openraft::error::Fatal::Stopped) => break,
                Err(fatal) => return fatal,
                Ok(()) => {}
            }
            if metrics.changed().await.is_err() {
                break;
            }
        }
        std::future::pending().await
    }

    /// Stops Raft: no more appends or applies, so the stores close consistent.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorage;

    #[tokio::test]
    async fn a_log_purged_past_every_snapshot_is_refused_by_name_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let state_machine = StateMachineStore::open(dir.path()).unwrap();
        // Without the gate, as builds before it could leave a volume.
        let mut log = LogStore::open(&dir.path().join("raft-log")).unwrap();
        assert!(refuse_a_log_purged_past_the_snapshot(&log, &state_machine).is_ok());
        log.purge(openraft::testing::log_id(3, 1, 113))
            .await
            .unwrap();
        let refused = refuse_a_log_purged_past_the_snapshot(&log, &state_machine);
        assert!(
            matches!(refused, Err(StartError::PurgedPastSnapshot { .. })),
            "{refused:?}"
        );
    }
}
