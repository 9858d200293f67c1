//! The cluster under test: its configuration (written in this one place), its node processes in
//! their namespaces, and the gRPC clients the harness reaches them with.
//!
//! Secrets, tokens and the audit key come from `callvault dev --init-only`, so the suite runs
//! with exactly what a dev cluster gets; each node's config is the dev config of node 1 with its
//! addresses, volume and the suite's tuning put in. Nodes form the cluster by themselves
//! (`[bootstrap] mode = "auto"`), as a Kubernetes StatefulSet does, so a wiped node rejoins the
//! way it would in production.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callvault_proto::auth::{AuthChannel, Bearer};
use callvault_proto::proof::SigningKey;
use callvault_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

use crate::net::Network;
use crate::node::Node;

/// The gRPC port of every node (each has a namespace of its own).
const GRPC_PORT: u16 = 7100;
/// The blob shard port of every node.
const BLOB_PORT: u16 = 7400;
/// Where the nodes' volumes are mounted: `<root>/<tag>/node-<id>`.
pub const VOLUME_ROOT: &str = "/run/cvchaos";
/// How long one request of the harness may take. Shorter than the 20 seconds a server retries
/// the metadata store for: a client stuck on a cut-off node gives up and moves on, as a
/// platform would, and its request counts as an unknown outcome.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The health service that is a meta node's readiness.
const READINESS: &str = "callvault.v1.MetaStore";

/// What the suite's nodes run with, on top of the dev config. Snapshots are frequent so that
/// lagging nodes get snapshots installed and logs get purged; sweeps and shreds are quick so a
/// run sees them many times.
fn tuning(id: usize, nodes: usize, volume: &Path) -> toml::Table {
    let addr = |i: usize| format!("{}:{GRPC_PORT}", Network::node_ip(i));
    let all: Vec<toml::Value> = (1..=nodes).map(|i| addr(i).into()).collect();
    let shards: Vec<toml::Value> = (1..=nodes)
        .map(|i| {
            let mut shard = toml::Table::new();
            shard.insert("id".into(), format!("blob-{i}").into());
            shard.insert(
                "addr".into(),
                format!("{}:{BLOB_PORT}", Network::node_ip(i)).into(),
            );
            shard.into()
        })
        .collect();
    let text = format!(
        "node_id = {id}\n\
         data_dir = {volume:?}\n\
         listen_addr = {listen:?}\n\
         [meta]\nheartbeat_ms = 150\nelection_timeout_min_ms = 800\nelection_timeout_max_ms = 1600\n\
         snapshot_after_entries = 100\nlog_entries_kept_after_snapshot = 20\n\
         [bootstrap]\nmode = \"auto\"\njoin_timeout_seconds = 600\n\
         [playback]\ncalls_per_hour = 1000000\nbytes_per_hour = 1099511627776\n\
         [lifecycle]\nsweep_tick_ms = 500\nshred_tick_ms = 1000\ncollect_tick_ms = 1000\n\
         [blob]\nlisten_addr = \"{blob_ip}:{BLOB_PORT}\"\nreplicas = 3\n",
        listen = addr(id),
        blob_ip = Network::node_ip(id),
    );
    let mut table: toml::Table = toml::from_str(&text).expect("the suite's tuning is TOML");
    let section = |t: &mut toml::Table, name: &str| -> toml::Table {
        t.get(name)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default()
    };
    let mut bootstrap = section(&mut table, "bootstrap");
    bootstrap.insert("seeds".into(), all.clone().into());
    table.insert("bootstrap".into(), bootstrap.into());
    let mut blob = section(&mut table, "blob");
    blob.insert("shards".into(), shards.into());
    table.insert("blob".into(), blob.into());
    let mut cluster = toml::Table::new();
    cluster.insert("meta_addrs".into(), all.into());
    table.insert("cluster".into(), cluster.into());
    table
}

/// Puts every key of `over` into `base`, merging tables section by section.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(more)) => merge(inner, more),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The secrets and tokens of a run, from `callvault dev --init-only`.
pub struct Secrets {
    /// `tokens.env`: each dev principal's token (`CALLVAULT_DEV_<NAME>_TOKEN`) and signing key
    /// file (`…_KEY`).
    tokens: HashMap<String, String>,
    /// The principals' signing keys, loaded once, by `CALLVAULT_DEV_<NAME>`.
    keys: HashMap<String, SigningKey>,
    /// The `meta` role's token: internal reads such as `MetaStore.StateDigest` are the meta
    /// role's (one table in callvault-proto's `identity` names who may call what).
    meta_token: String,
    /// The audit log's verifier key.
    pub vkey: String,
    /// The audit log's origin line.
    pub origin: String,
    template: toml::Table,
}

impl Secrets {
    /// Writes the dev secrets under `dir/state` with `bin`.
    pub fn write(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let state = dir.join("state");
        let out = std::process::Command::new(bin)
            .args(["dev", "--init-only", "--dir"])
            .arg(&state)
            .output()
            .context("cannot run callvault dev --init-only")?;
        if !out.status.success() {
            bail!(
                "callvault dev --init-only: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let read = |name: &str| -> anyhow::Result<String> {
            Ok(std::fs::read_to_string(state.join(name))
                .with_context(|| format!("dev layout has no {name}"))?
                .trim()
                .to_string())
        };
        let tokens: HashMap<String, String> = read("tokens.env")?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut keys = HashMap::new();
        for (var, path) in &tokens {
            if let Some(name) = var.strip_suffix("_KEY") {
                let key =
                    SigningKey::load(Path::new(path)).map_err(|e| anyhow::anyhow!("{var}: {e}"))?;
                keys.insert(name.to_string(), key);
            }
        }
        let template: toml::Table = toml::from_str(&read("node-1.toml")?)?;
        let origin = template
            .get("audit")
            .and_then(|a| a.get("origin"))
            .and_then(|o| o.as_str())
            .context("the dev config names no audit origin")?
            .to_string();
        Ok(Secrets {
            tokens,
            keys,
            meta_token: read("secrets/meta.token")?,
            vkey: read("audit.vkey")?,
            origin,
            template,
        })
    }

    /// A dev principal's token (`platform`, `agency-tx`, `registry`, `operator`, …).
    pub fn token(&self, name: &str) -> &str {
        self.tokens
            .get(&format!("{}_TOKEN", dev_var(name)))
            .unwrap_or_else(|| panic!("the dev layout has no {name} token"))
    }

    /// A dev principal's signing key, if the layout gives it one.
    fn key(&self, name: &str) -> Option<SigningKey> {
        self.keys.get(&dev_var(name)).cloned()
    }

    /// The config of node `id` of `nodes`.
    fn node_config(&self, id: usize, nodes: usize, volume: &Path) -> String {
        let mut config = self.template.clone();
        // What dev writes for node 1 that names node 1 or loopback goes; tuning puts it back.
        config.remove("advertise_addr");
        merge(&mut config, tuning(id, nodes, volume));
        toml::to_string(&config).expect("a TOML table serializes")
    }
}

/// The `CALLVAULT_DEV_<NAME>` prefix of a dev principal's variables in tokens.env.
fn dev_var(name: &str) -> String {
    format!("CALLVAULT_DEV_{}", name.to_uppercase().replace('-', "_"))
}

/// A gRPC channel to `addr` (inside the namespaces: call from the clients' namespace).
pub fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(Duration::from_secs(1))
        .timeout(REQUEST_TIMEOUT)
        .connect_lazy()
}

/// How the harness reaches the nodes: one lazy channel per node and the dev tokens. Cheap to
/// clone; the workload, the monitor and the checkers each hold one.
#[derive(Clone)]
pub struct Clients {
    channels: Vec<Channel>,
    secrets: std::sync::Arc<Secrets>,
}

/// The cluster: nodes first, so their processes stop before the namespaces go.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub clients: Clients,
    pub net: Network,
}

impl Cluster {
    /// Creates the volumes, writes the configs under `dir` for `size` nodes of `bin` on `net`.
    /// Call from the clients' namespace (see [`Network::enter_client_ns`]).
    pub fn create(net: Network, size: usize, bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let secrets = Secrets::write(bin, dir)?;
        let mut nodes = Vec::new();
        for id in 1..=size {
            let volume = Path::new(VOLUME_ROOT)
                .join(net.tag())
                .join(format!("node-{id}"));
            let config = dir.join(format!("node-{id}.toml"));
            std::fs::write(&config, secrets.node_config(id, size, &volume))?;
            nodes.push(Node::new(
                id,
                format!("{}:{GRPC_PORT}", Network::node_ip(id)),
                net.node_ns(id),
                bin.to_path_buf(),
                config,
                volume,
                dir.join(format!("node-{id}.log")),
            )?);
        }
        let channels = nodes.iter().map(|n| channel(&n.addr)).collect();
        Ok(Cluster {
            nodes,
            clients: Clients {
                channels,
                secrets: std::sync::Arc::new(secrets),
            },
            net,
        })
    }

    /// How many nodes there are.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Node `id`.
    pub fn node(&mut self, id: usize) -> &mut Node {
        &mut self.nodes[id - 1]
    }

    /// Starts every node and waits until all are ready voters.
    pub async fn start_all(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.start()?;
        }
        self.wait_ready(&(1..=self.size()).collect::<Vec<_>>(), timeout)
            .await
    }

    /// Waits until every node of `ids` is a ready voter.
    pub async fn wait_ready(&mut self, ids: &[usize], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = Vec::new();
            for &id in ids {
                if !self.clients.is_ready(id).await {
                    missing.push(id);
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            for &id in &missing {
                let node = self.node(id);
                if !node.is_running() {
                    bail!(
                        "node {id} exited ({:?}) while the harness waited for it to be ready; see {}",
                        node.last_exit,
                        node.log_path().display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("nodes {missing:?} not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Clients {
    /// How many nodes there are.
    pub fn size(&self) -> usize {
        self.channels.len()
    }

    /// The run's secrets (tokens, audit key).
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// A channel to node `id` presenting the token of principal `who` and signing each
    /// request with its key, as a real client of that principal does.
    pub fn as_principal(&self, id: usize, who: &str) -> AuthChannel {
        let bearer = Bearer::new(self.secrets.token(who)).expect("dev tokens are valid");
        let channel = self.channels[id - 1].clone();
        match self.secrets.key(who) {
            Some(key) => bearer.signed_channel(channel, key),
            None => bearer.channel(channel),
        }
    }

    /// A channel to node `id` as the `meta` role (the internal `MetaStore` service).
    pub fn as_meta_role(&self, id: usize) -> AuthChannel {
        Bearer::new(&self.secrets.meta_token)
            .expect("the meta role's token is valid")
            .channel(self.channels[id - 1].clone())
    }

    /// Node `id`'s view of the cluster, if it answers.
    pub async fn status(&self, id: usize) -> Option<pb::ClusterStatus> {
        let mut client = pb::cluster_client::ClusterClient::new(self.as_principal(id, "operator"));
        let request = tonic::Request::new(pb::StatusRequest {});
        tokio::time::timeout(Duration::from_secs(3), client.status(request))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }

    /// Whether node `id` reports itself a caught-up voter.
    pub async fn is_ready(&self, id: usize) -> bool {
        let mut client =
            tonic_health::pb::health_client::HealthClient::new(self.channels[id - 1].clone());
        let request = tonic_health::pb::HealthCheckRequest {
            service: READINESS.into(),
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(3), client.check(request)).await,
            Ok(Ok(r)) if r.get_ref().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        )
    }

    /// Node `id`'s applied index and state digest.
    pub async fn digest(&self, id: usize) -> Option<(u64, Vec<u8>)> {
        let mut client = pb::meta_store_client::MetaStoreClient::new(self.as_meta_role(id));
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client.state_digest(pb::StateDigestRequest {}),
        )
        .await
        .ok()?
        .ok()?
        .into_inner();
        Some((answer.applied_index, answer.digest))
    }

    /// Every audit entry node `id` holds, read as the auditor, page by page.
    pub async fn audit_entries(&self, id: usize) -> Option<Vec<pb::AuditEntry>> {
        let mut client = pb::audit_client::AuditClient::new(self.as_principal(id, "auditor"));
        let mut entries = Vec::new();
        let mut start = 0;
        loop {
            let page = client
                .get_entries(pb::GetEntriesRequest {
                    start,
                    end: start + 1000,
                })
                .await
                .ok()?
                .into_inner();
            entries.extend(page.entries);
            start = (start + 1000).min(page.tree_size);
            if start >= page.tree_size {
                return Some(entries);
            }
        }
    }

    /// Node `id`'s latest audit checkpoint.
    pub async fn checkpoint(&self, id: usize) -> Option<pb::Checkpoint> {
        let mut client = pb::audit_client::AuditClient::new(self.as_principal(id, "auditor"));
        let request = pb::GetCheckpointRequest {};
        tokio::time::timeout(Duration::from_secs(5), client.get_checkpoint(request))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }
}
