//! A meta node's way into the cluster without an operator (`[bootstrap] mode = "auto"`), and its
//! readiness.
//!
//! - **Bootstrap.** A node that is already a voter does nothing. Otherwise it asks the seeds
//!   what they know. If one is a member of a cluster, the node asks it to add this node as a
//!   learner and promote it once caught up (a follower forwards that to the leader). If none is,
//!   only node `init_node_id` may initialize a new cluster, and only when a majority of the seeds
//!   (this node included) answered that their store is empty: a node that lost its volume while
//!   its peers still hold the cluster joins it instead of starting a second one; the leader sees
//!   the volume's new incarnation and replaces the old one (see `callvault_meta::member`), so
//!   the node catches up as a learner before it votes again.
//! - **Readiness.** The health status of [`READINESS_SERVICE`] is SERVING only while this node is
//!   a voter, knows a leader, and has applied everything the leader had committed when asked
//!   (`Cluster.ReadIndex`). A Kubernetes readiness probe on it keeps a rolling restart from
//!   taking down the next member before the last one has caught up, and the PodDisruptionBudget
//!   counts only caught-up members as available.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callvault_meta::MetaNode;
use callvault_proto::auth::AuthChannel;
use callvault_proto::identity::{Credential, Role};
use callvault_proto::v1 as pb;
use callvault_proto::v1::cluster_client::ClusterClient;
use callvault_proto::v1::cluster_server::Cluster;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::NodeConfig;

/// The gRPC health service name whose status is this meta node's readiness.
pub const READINESS_SERVICE: &str = "callvault.v1.MetaStore";

/// How often bootstrap asks the seeds again, and readiness is re-evaluated.
const POLL: Duration = Duration::from_secs(1);
/// How long one seed may take to answer a status request.
const SEED_STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one join request may take: the leader answers once this node has caught up, which
/// may need a snapshot of the whole store.
const JOIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a readiness check may wait for the leader's read index and for this node's apply.
const READINESS_WAIT: Duration = Duration::from_secs(2);

/// What auto bootstrap needs from the configuration.
#[derive(Debug, Clone)]
pub struct BootstrapPlan {
    node_id: u64,
    advertise: String,
    seeds: Vec<String>,
    init_node_id: u64,
    join_timeout: Duration,
    peer: Credential,
}

impl BootstrapPlan {
    /// The plan of the node `config` describes.
    pub fn from_config(config: &NodeConfig) -> anyhow::Result<Self> {
        let advertise = config.advertise();
        let mut seen = BTreeSet::new();
        let seeds = config
            .bootstrap
            .seeds
            .iter()
            .filter(|s| **s != advertise && seen.insert(s.to_string()))
            .cloned()
            .collect();
        Ok(BootstrapPlan {
            node_id: config.node_id,
            advertise,
            seeds,
            init_node_id: config.bootstrap.init_node_id,
            join_timeout: Duration::from_secs(config.bootstrap.join_timeout_seconds),
            peer: config.credential(Role::Meta)?,
        })
    }
}

/// What one seed said.
enum SeedAnswer {
    /// It is a member of a cluster.
    Member,
    /// Its store is empty: it knows no cluster.
    Empty,
    /// It did not answer.
    Unreachable(String),
}

/// Makes this node a voter, initializing or joining as described in the module docs. Returns
/// once it is one, or when `stop` is set; fails after `join_timeout`.
pub async fn run(
    node: Arc<MetaNode>,
    plan: BootstrapPlan,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + plan.join_timeout;
    let mut last_problem = String::from("no seed answered yet");
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let metrics = node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        if membership.voter_ids().any(|id| id == plan.node_id) {
            tracing::info!(node_id = plan.node_id, "bootstrap: this node is a voter");
            if membership
                .get_node(&plan.node_id)
                .is_some_and(|node| node.incarnation == 0)
            {
                record_incarnation(&plan, deadline).await;
            }
            return Ok(());
        }
        let has_state = membership.nodes().next().is_some();

        let mut members = Vec::new();
        let mut empty = usize::from(!has_state);
        let mut unreachable = Vec::new();
        for seed in &plan.seeds {
            match ask(seed, &plan.peer).await {
                SeedAnswer::Member => members.push(seed.clone()),
                SeedAnswer::Empty => empty += 1,
                SeedAnswer::Unreachable(why) => unreachable.push(format!("{seed}: {why}")),
            }
        }

        if !members.is_empty() {
            for seed in &members {
                match join(seed, &plan, deadline).await {
                    Ok(status) => {
                        tracing::info!(
                            node_id = plan.node_id,
                            via = %seed,
                            leader = status.leader_id,
                            "bootstrap: joined the cluster as a voter"
                        );
                        break;
                    }
                    Err(e) => {
                        last_problem = format!("joining through {seed}: {e}");
                        tracing::warn!("bootstrap: {last_problem}");
                    }
                }
            }
        } else if !has_state && plan.node_id == plan.init_node_id {
            // Majority of the seeds with this node among them.
            let voters = plan.seeds.len() + 1;
            if empty * 2 > voters {
                match node
                    .service
                    .init(tonic::Request::new(pb::InitRequest {}))
                    .await
                {
                    Ok(_) => tracing::info!(
                        node_id = plan.node_id,
                        empty_seeds = empty - 1,
                        "bootstrap: initialized a new cluster"
                    ),
                    Err(e) => {
                        last_problem = format!("initializing: {}", e.message());
                        tracing::warn!("bootstrap: {last_problem}");
                    }
                }
            } else {
                last_problem = format!(
                    "{empty} of {voters} seeds (this node included) are known empty; a new \
                     cluster needs a majority, unreachable: {}",
                    unreachable.join("; ")
                );
                tracing::info!("bootstrap: waiting: {last_problem}");
            }
        } else {
            last_problem = format!(
                "no seed is a member of a cluster yet (unreachable: {})",
                if unreachable.is_empty() {
                    "none".to_string()
                } else {
                    unreachable.join("; ")
                }
            );
            tracing::info!(
                "bootstrap: waiting for node {}: {last_problem}",
                plan.init_node_id
            );
        }

        if Instant::now() > deadline {
            bail!(
                "bootstrap: node {} is not a voter after {}s: {last_problem}",
                plan.node_id,
                plan.join_timeout.as_secs()
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn client(
    addr: &str,
    peer: &Credential,
    timeout: Duration,
) -> anyhow::Result<ClusterClient<AuthChannel>> {
    let channel = callvault_proto::tls::endpoint(addr)
        .with_context(|| format!("invalid seed address {addr:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    Ok(ClusterClient::new(peer.bearer().channel(channel)))
}

async fn ask(seed: &str, peer: &Credential) -> SeedAnswer {
    let mut client = match client(seed, peer, SEED_STATUS_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => return SeedAnswer::Unreachable(format!("{e:#}")),
    };
    match client.status(pb::StatusRequest {}).await {
        Ok(status) if status.get_ref().members.is_empty() => SeedAnswer::Empty,
        Ok(_) => SeedAnswer::Member,
        Err(e) => SeedAnswer::Unreachable(format!("{}: {}", e.code(), e.message())),
    }
}

async fn join(
    seed: &str,
    plan: &BootstrapPlan,
    deadline: Instant,
) -> anyhow::Result<pb::ClusterStatus> {
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_secs(1), JOIN_REQUEST_TIMEOUT);
    let mut client = client(seed, &plan.peer, remaining).await?;
    client
        .add_member(pb::AddMemberRequest {
            node_id: plan.node_id,
            addr: plan.advertise.clone(),
            learner_only: false,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))
}

/// A voter recorded before volumes had incarnations asks the leader (through any seed) to record
/// its volume's, so a later loss of the volume is recognised. Best effort: the node serves
/// either way.
async fn record_incarnation(plan: &BootstrapPlan, deadline: Instant) {
    for seed in &plan.seeds {
        match join(seed, plan, deadline).await {
            Ok(_) => {
                tracing::info!(
                    node_id = plan.node_id,
                    "bootstrap: recorded this volume's incarnation"
                );
                return;
            }
            Err(e) => tracing::warn!("bootstrap: recording the incarnation through {seed}: {e}"),
        }
    }
}

/// Whether this node is caught up now: a voter that knows a leader and has applied the leader's
/// read index.
async fn caught_up(node: &MetaNode, node_id: u64) -> Result<(), String> {
    let metrics = node.raft.metrics().borrow().clone();
    if !metrics
        .membership_config
        .membership()
        .voter_ids()
        .any(|id| id == node_id)
    {
        return Err("not a voter".into());
    }
    if metrics.current_leader.is_none() {
        return Err("no leader known".into());
    }
    let read_index = tokio::time::timeout(READINESS_WAIT, node.service.leader_read_index())
        .await
        .map_err(|_| "the leader did not confirm its commit index in time".to_string())?
        .map_err(|s| format!("leader read index: {}", s.message()))?
        .read_index;
    node.raft
        .wait(Some(READINESS_WAIT))
        .applied_index_at_least(Some(read_index), "caught up with the leader")
        .await
        .map(|_| ())
        .map_err(|_| {
            let applied = node
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index);
            format!("applied {applied}, leader committed {read_index}")
        })
}

/// Keeps [`READINESS_SERVICE`]'s health status in step with [`caught_up`] until `stop`.
pub async fn readiness(
    node: Arc<MetaNode>,
    node_id: u64,
    health: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready = None;
    loop {
        let now = caught_up(&node, node_id).await;
        if ready != Some(now.is_ok()) {
            ready = Some(now.is_ok());
            let status = if now.is_ok() {
                tracing::info!("ready: a voter caught up with the leader");
                ServingStatus::Serving
            } else {
                let why = now.as_ref().err().cloned().unwrap_or_default();
                tracing::info!(reason = %why, "not ready");
                ServingStatus::NotServing
            };
            health.set_service_status(READINESS_SERVICE, status).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            health
                .set_service_status(READINESS_SERVICE, ServingStatus::NotServing)
                .await;
            return;
        }
    }
}
