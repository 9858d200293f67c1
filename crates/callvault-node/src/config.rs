//! Node configuration: a TOML file, then `CALLVAULT_*` environment overrides (nested keys with
//! `__`, e.g. `CALLVAULT_META__HEARTBEAT_MS=100`), then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

/// Top-level keys that `CALLVAULT_*` variables may set; other `CALLVAULT_*` variables (such as
/// `CALLVAULT_BIN` in tests) are not configuration.
const ENV_KEYS: &[&str] = &[
    "node_id",
    "data_dir",
    "listen_addr",
    "advertise_addr",
    "roles",
    "meta",
    "cluster",
    "auth",
    "ingest",
    "bootstrap",
    "blob",
    "audit",
    "playback",
    "lifecycle",
    "tls",
    "identity",
];

/// `CALLVAULT_*` variables the binary reads that are not configuration keys.
const OTHER_ENV_VARS: &[&str] = &[
    "CALLVAULT_LOG",               // log filter of `serve`
    "CALLVAULT_TOKEN",             // bearer token of the client commands
    "CALLVAULT_ADDR",              // node address of the client commands
    "CALLVAULT_REGISTRY_TOKEN",    // `load`'s registry token
    "CALLVAULT_KEY_FILE",          // signing key of the client commands' principal
    "CALLVAULT_REGISTRY_KEY_FILE", // `load`'s registry principal's signing key
    "CALLVAULT_KEKS",              // key-encryption keys, for library users (`KeyRing::from_env`)
    "CALLVAULT_TLS_CA_FILE",       // CA of the client commands, for a cluster serving TLS
    "CALLVAULT_TLS_SERVER_NAME",   // name the client commands expect in the server's certificate
];

/// The `CALLVAULT_*` variables among `vars` that callvault would silently ignore: neither a
/// configuration key nor a variable it reads. A typo such as `CALLVAULT_ADVERTISE_ADR` would
/// otherwise leave a pod running on defaults.
pub fn unknown_env_vars<'a>(vars: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    vars.into_iter()
        .filter_map(|name| {
            let key = name.strip_prefix("CALLVAULT_")?;
            let top = key.split("__").next().unwrap_or_default();
            let known = ENV_KEYS.iter().any(|k| top.eq_ignore_ascii_case(k))
                || OTHER_ENV_VARS.contains(&name);
            (!known).then(|| name.to_string())
        })
        .collect()
}

/// A role a node plays. A laptop runs every role in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A voter or learner of the Raft-replicated metadata store.
    Meta,
    /// A content-addressed blob shard holding encrypted chunks.
    Blob,
    /// The stateless front door for call platforms (`Ingest`).
    Ingest,
    /// The stateless query and administration APIs (`Query`, `Admin`).
    Api,
}

impl Role {
    /// The identity this role authenticates to its peers as.
    pub fn identity(self) -> callvault_proto::identity::Role {
        use callvault_proto::identity::Role as Id;
        match self {
            Role::Meta => Id::Meta,
            Role::Blob => Id::Blob,
            Role::Ingest => Id::Ingest,
            Role::Api => Id::Api,
        }
    }
}

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique, never-reused id of this node (> 0).
    pub node_id: u64,
    /// Where this node keeps its data. Each node has its own.
    pub data_dir: PathBuf,
    /// Address the internal gRPC endpoint listens on.
    pub listen_addr: SocketAddr,
    /// `host:port` peers use to reach this node; defaults to `listen_addr`.
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Roles this node plays.
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    /// Metadata-store tuning.
    #[serde(default)]
    pub meta: MetaSection,
    /// The audit log's checkpoint signing identity.
    #[serde(default)]
    pub audit: AuditSection,
    /// The blob shard, for the `blob` role; its shard set is also where ingest writes.
    #[serde(default)]
    pub blob: BlobSection,
    /// Cluster secrets and where the metadata store is.
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Who may call the public APIs.
    #[serde(default)]
    pub auth: AuthSection,
    /// Limits of the ingest role.
    #[serde(default)]
    pub ingest: IngestSection,
    /// Playback limits of the api role.
    #[serde(default)]
    pub playback: PlaybackSection,
    /// The retention sweeper, the shredder and the collector (meta role).
    #[serde(default)]
    pub lifecycle: LifecycleSection,
    /// How a meta node forms or joins the cluster.
    #[serde(default)]
    pub bootstrap: BootstrapSection,
    /// Transport security of every listener and channel.
    #[serde(default)]
    pub tls: TlsSection,
    /// How this node proves its roles to its peers and knows theirs.
    #[serde(default)]
    pub identity: IdentitySection,
}

/// `[identity]`: every workload authenticates to its peers as its role (see
/// `callvault_proto::identity`). With `[tls]`, the node's certificate names its roles and nothing
/// here is needed; without it, each role has a token of its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// A TOML file of `[[peer]]` entries (`role`, `token_blake3`): the role tokens this node's
    /// internal services accept, by their BLAKE3 hashes.
    pub peers_file: Option<PathBuf>,
    /// This node's own role tokens: one file per role it plays.
    #[serde(default)]
    pub token_files: RoleTokenFiles,
}

/// `[identity.token_files]`: a token file per role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleTokenFiles {
    /// The `meta` role's token.
    pub meta: Option<PathBuf>,
    /// The `blob` role's token.
    pub blob: Option<PathBuf>,
    /// The `ingest` role's token.
    pub ingest: Option<PathBuf>,
    /// The `api` role's token.
    pub api: Option<PathBuf>,
}

impl RoleTokenFiles {
    /// The token file of `role`, if set.
    pub fn of(&self, role: Role) -> Option<&PathBuf> {
        match role {
            Role::Meta => self.meta.as_ref(),
            Role::Blob => self.blob.as_ref(),
            Role::Ingest => self.ingest.as_ref(),
            Role::Api => self.api.as_ref(),
        }
    }
}

/// The peers file: role tokens by hash.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersFile {
    #[serde(default)]
    peer: Vec<PeerEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerEntry {
    role: String,
    token_blake3: String,
}

/// Parses peers-file text (`[[peer]]` entries of `role` and `token_blake3`).
pub fn parse_peers(text: &str) -> anyhow::Result<callvault_proto::identity::PeerTable> {
    let file: PeersFile = toml::from_str(text)?;
    let mut tokens = Vec::new();
    for entry in file.peer {
        let role = callvault_proto::identity::Role::from_name(&entry.role)
            .with_context(|| format!("no role named {:?}", entry.role))?;
        let hash = crate::auth::parse_hex32(&entry.token_blake3)
            .with_context(|| format!("peer {role}: token_blake3 must be 64 hex"))?;
        tokens.push((role, hash));
    }
    Ok(callvault_proto::identity::PeerTable::new(tokens)?)
}

/// `[playback]`: per-principal limits on content access, counted cluster-wide by the metadata
/// store per clock hour. Going over is `RESOURCE_EXHAUSTED` and is recorded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaybackSection {
    /// Calls one principal may play back per hour (default 60).
    pub calls_per_hour: u64,
    /// Audio bytes one principal may play back per hour (default 1 GiB: about 37 hours of
    /// G.711).
    pub bytes_per_hour: u64,
}

impl Default for PlaybackSection {
    fn default() -> Self {
        PlaybackSection {
            calls_per_hour: 60,
            bytes_per_hour: 1 << 30,
        }
    }
}

/// How a meta node becomes a voter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootstrapMode {
    /// An operator runs `callvault cluster init` and `add-voter`.
    #[default]
    Manual,
    /// The node does it itself: with an empty store, node `init_node_id` initializes a new
    /// cluster once a majority of the seeds (itself included) answer that they have none, and
    /// every other node asks a seed that has one to add it as a learner and promote it.
    Auto,
}

/// `[bootstrap]`: forming the metadata store without a manual step (Kubernetes StatefulSets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapSection {
    /// `"manual"` (default) or `"auto"`.
    pub mode: BootstrapMode,
    /// `host:port` of meta members to ask (this node's own address may be among them). They need
    /// not be every member: one that is part of the cluster is enough to join.
    pub seeds: Vec<String>,
    /// The node that initializes a new cluster (default 1: ordinal 0 of a StatefulSet).
    pub init_node_id: u64,
    /// Give up, and exit non-zero, if this node is not a voter after this long (default 600).
    pub join_timeout_seconds: u64,
}

impl Default for BootstrapSection {
    fn default() -> Self {
        BootstrapSection {
            mode: BootstrapMode::Manual,
            seeds: Vec::new(),
            init_node_id: 1,
            join_timeout_seconds: 600,
        }
    }
}

/// `[lifecycle]`: background work of meta nodes. The sweeper and the collector run on the Raft
/// leader; every meta node runs its own shredder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSection {
    /// Run the sweeper, shredder and collector on this node (meta role only). The clock
    /// attestation runs regardless: deadlines at read need the cluster time.
    pub enabled: bool,
    /// Run the retention sweeper (default true). Off, nothing expires on schedule, but reads
    /// still refuse recordings past their deadline.
    pub sweep: bool,
    /// How often the leader looks for due recordings; each jurisdiction is swept at its
    /// policy's `sweep_interval_seconds` (default tick 1000 ms).
    pub sweep_tick_ms: u64,
    /// Calls per `Expire` proposal (at most 1000).
    pub expire_batch: usize,
    /// How often each meta node looks for shreds it has not yet confirmed (default 2000 ms).
    pub shred_tick_ms: u64,
    /// How often the leader removes shredded calls' chunks from the blob shards (default
    /// 2000 ms). Needs `blob.shards`.
    pub collect_tick_ms: u64,
    /// How often this voter attests its wall clock through the log (default 5000 ms). The
    /// cluster time is the median of the voters' latest attestations, so it trails real time
    /// by about this much: a deadline is enforced at most this late (keep it below the
    /// policies' sweep intervals), and each voter adds one log entry per pace.
    pub clock_attest_ms: u64,
    /// How far a voter's clock may be off the cluster time before it is reported and stops
    /// leading sweeps (default 30000 ms; at least three `clock_attest_ms`).
    pub max_clock_skew_ms: u64,
    /// The longest an expired call's shred waits for this node's ordinary snapshot and log
    /// purge before the shredder forces one (default 21600 s). Purges never wait.
    pub expiry_receipt_max_seconds: u64,
    /// How often the leader sweeps the blob shards for orphan chunks, seconds (default 600;
    /// 0 = never). Needs `blob.shards`.
    pub orphan_sweep_seconds: u64,
    /// How old a chunk no committed call references must be before the sweep removes it,
    /// seconds (default 86400). At least the longest stream plus the commit window
    /// (`ingest.max_call_seconds` + 60), and at least each shard's `blob.orphan_min_age_seconds`.
    pub orphan_grace_seconds: u64,
}

impl Default for LifecycleSection {
    fn default() -> Self {
        LifecycleSection {
            enabled: true,
            sweep: true,
            sweep_tick_ms: 1000,
            expire_batch: 1000,
            shred_tick_ms: 2000,
            collect_tick_ms: 2000,
            clock_attest_ms: 5000,
            max_clock_skew_ms: 30_000,
            expiry_receipt_max_seconds: 6 * 3600,
            orphan_sweep_seconds: 600,
            orphan_grace_seconds: 86_400,
        }
    }
}

/// The node id of a StatefulSet pod: its ordinal (the number after the last `-` of its name)
/// plus one, since node ids start at 1. `callvault-meta-0` is node 1.
pub fn node_id_from_ordinal(pod_name: &str) -> anyhow::Result<u64> {
    let ordinal = pod_name
        .rsplit_once('-')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .with_context(|| {
            format!("{pod_name:?} does not end in -<ordinal> like a StatefulSet pod's name")
        })?;
    ordinal
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_add(1))
        .with_context(|| format!("ordinal of {pod_name:?} is too large"))
}

/// `[cluster]`: what the roles that need them share (mount them from Kubernetes Secrets; never
/// commit them) and where the stateless roles reach the metadata store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// A file holding the 32-byte key (64 hex characters) of the keyed hash that indexes calls by
    /// dialed number. Required by the ingest and api roles; the same on every node, forever.
    pub index_key_file: Option<PathBuf>,
    /// The jurisdictions' key-encryption keys (see `callvault_blob::KeyRing`). Required by the
    /// ingest role.
    pub kek_file: Option<PathBuf>,
    /// `host:port` of metadata-store members the stateless roles talk to. Defaults to this node
    /// when it has the meta role.
    #[serde(default)]
    pub meta_addrs: Vec<String>,
}

/// `[tls]`: TLS on every listener and channel of the node (its gRPC port, its blob shard's, and
/// every connection to a peer), or plaintext when unset. The three files go together.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM of the CA that every peer's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// PEM of this node's certificate (and chain). Its names must include every name peers and
    /// clients dial it by: the advertised address and the blob shard's address.
    pub cert_file: Option<PathBuf>,
    /// PEM of the certificate's private key.
    pub key_file: Option<PathBuf>,
    /// A plaintext listener that serves only the gRPC health service, for probes that cannot
    /// speak TLS (the kubelet's gRPC probes). Health statuses carry no data.
    pub health_listen_addr: Option<SocketAddr>,
}

/// `[auth]`: the principals of the public APIs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// A TOML file of `[[principal]]` entries (name, role, jurisdictions, token_blake3). Without
    /// it, no one may call the public APIs.
    pub principals_file: Option<PathBuf>,
}

/// `[ingest]`: limits of one call stream and of the node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Longest call accepted, seconds (default 4 hours).
    pub max_call_seconds: u64,
    /// Most plaintext audio bytes one call may have (default 512 MiB: about 18 hours of G.711).
    pub max_call_bytes: u64,
    /// Calls streaming at once on this node; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_calls: usize,
    /// Audio bytes this node holds in memory across all streams (chunks being encrypted or
    /// written); a stream waits for room, so a slow shard slows platforms instead of growing
    /// memory.
    pub max_buffered_bytes: u64,
    /// Block writes in flight per call.
    pub chunk_writes_in_flight: usize,
    /// Audio is cut into blocks of this many bytes before it is sealed and written, whatever
    /// chunk sizes the platform sends: 262144 (256 KiB) to 1048576 (1 MiB, the default). Larger
    /// blocks mean fewer chunk ids per call, fewer shard writes and fsyncs per megabyte.
    pub block_bytes: usize,
    /// Replicas that must hold a chunk before ingest goes on (W, default 2 of `blob.replicas`).
    pub write_quorum: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            max_call_seconds: 4 * 3600,
            max_call_bytes: 512 << 20,
            max_concurrent_calls: 1024,
            max_buffered_bytes: 256 << 20,
            chunk_writes_in_flight: 4,
            block_bytes: crate::ingest::MAX_BLOCK_BYTES,
            write_quorum: 2,
        }
    }
}

/// `[blob]`: the blob shard of this node. Every field but `shards` has a default; the shard's
/// data lives in `<data_dir>/blob` and its id defaults to `blob-<node_id>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobSection {
    /// This shard's id in the shard set (never change it: placement hashes it).
    pub shard_id: Option<String>,
    /// Where the BlobShard service listens (default 127.0.0.1:7400).
    pub listen_addr: Option<SocketAddr>,
    /// The whole shard set, this shard included: `[{ id = "blob-1", addr = "host:7400" }, …]`.
    #[serde(default)]
    pub shards: Vec<callvault_blob::ShardInfo>,
    /// Replicas per chunk (R, default 3).
    pub replicas: Option<usize>,
    /// Scrubber read rate, bytes per second (default 64 MiB/s; 0 = unlimited).
    pub scrub_bytes_per_second: Option<u64>,
    /// Seconds between scrub passes (default 86400; 0 = no background scrubbing).
    pub scrub_interval_seconds: Option<u64>,
    /// Shortest grace a collection may use, seconds (default 86400).
    pub collect_min_grace_seconds: Option<u64>,
    /// The youngest chunk an orphan sweep may remove from this shard, seconds (default 86400):
    /// at least the longest stream plus the commit window (`ingest.max_call_seconds` + 60).
    pub orphan_min_age_seconds: Option<u64>,
    /// Connect timeout to peer shards, milliseconds (default 2000).
    pub peer_connect_timeout_ms: Option<u64>,
    /// Deadline of each request to a peer shard, milliseconds (default 30000).
    pub peer_request_timeout_ms: Option<u64>,
}

/// `[audit]`: who signs checkpoints. Without a key, the log is kept and served but checkpoints
/// are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// The checkpoint origin line, e.g. `callvault.example.gov/audit`.
    pub origin: Option<String>,
    /// A file holding the log's private key (`PRIVATE+KEY+…`, from `callvault audit keygen`).
    /// Mount it from a secret; never commit it.
    pub signing_key_file: Option<PathBuf>,
    /// Seconds over which failed authentications are coalesced, per source address, into one
    /// audit entry (default 60).
    pub auth_failure_window_seconds: Option<u64>,
}

impl AuditSection {
    /// The window of failed-authentication reports: 1 second to 1 hour.
    pub fn auth_failure_window(&self) -> anyhow::Result<std::time::Duration> {
        match self.auth_failure_window_seconds {
            None => Ok(crate::auth_failures::DEFAULT_WINDOW),
            Some(s @ 1..=3600) => Ok(std::time::Duration::from_secs(s)),
            Some(s) => bail!("[audit] auth_failure_window_seconds = {s}: must be 1 to 3600"),
        }
    }

    /// The log identity, if configured.
    pub fn identity(&self) -> anyhow::Result<Option<callvault_meta::audit_service::LogIdentity>> {
        let (origin, file) = match (&self.origin, &self.signing_key_file) {
            (None, None) => return Ok(None),
            (Some(origin), Some(file)) => (origin, file),
            _ => bail!("[audit] needs both origin and signing_key_file"),
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read audit signing key {}", file.display()))?;
        let signer = callvault_audit::NoteSigner::from_encoded(text.trim())
            .map_err(|e| anyhow::anyhow!("audit signing key {}: {e}", file.display()))?;
        Ok(Some(callvault_meta::audit_service::LogIdentity {
            origin: origin.clone(),
            signer,
        }))
    }
}

fn default_roles() -> Vec<Role> {
    vec![Role::Meta]
}

/// `[meta]`: Raft timing and snapshot cadence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaSection {
    /// Leader heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound, milliseconds.
    pub election_timeout_min_ms: u64,
    /// Election timeout upper bound, milliseconds.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot.
    pub log_entries_kept_after_snapshot: u64,
}

impl Default for MetaSection {
    fn default() -> Self {
        let defaults = callvault_meta::MetaConfig::new(0, PathBuf::new(), String::new());
        MetaSection {
            heartbeat_ms: defaults.heartbeat_ms,
            election_timeout_min_ms: defaults.election_timeout_min_ms,
            election_timeout_max_ms: defaults.election_timeout_max_ms,
            snapshot_after_entries: defaults.snapshot_after_entries,
            log_entries_kept_after_snapshot: defaults.log_entries_kept_after_snapshot,
        }
    }
}

impl NodeConfig {
    /// Loads `file` (if given) under `CALLVAULT_*` environment overrides and checks it.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_inner(file, None)
    }

    /// [`NodeConfig::load`], with `node_id` (from `--node-id-from-ordinal`) overriding the file
    /// and the environment; the file may then leave `node_id` out.
    pub fn load_with_node_id(file: Option<&Path>, node_id: u64) -> anyhow::Result<Self> {
        Self::load_inner(file, Some(node_id))
    }

    fn load_inner(file: Option<&Path>, node_id: Option<u64>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(
            Env::prefixed("CALLVAULT_")
                .filter(|key| {
                    let top = key.as_str().split("__").next().unwrap_or_default();
                    ENV_KEYS.iter().any(|k| top.eq_ignore_ascii_case(k))
                })
                .split("__"),
        );
        if let Some(id) = node_id {
            figment = figment.merge(figment::providers::Serialized::global("node_id", id));
        }
        let config: NodeConfig = figment.extract().with_context(|| match file {
            Some(f) => format!(
                "invalid configuration in {} or CALLVAULT_* variables",
                f.display()
            ),
            None => "invalid configuration in CALLVAULT_* variables".to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.node_id == 0 {
            bail!("node_id must be greater than 0");
        }
        if self.roles.is_empty() {
            bail!("roles must name at least one role");
        }
        let m = &self.meta;
        if m.heartbeat_ms == 0 || m.election_timeout_min_ms <= m.heartbeat_ms {
            bail!("meta.election_timeout_min_ms must exceed meta.heartbeat_ms (> 0)");
        }
        if m.election_timeout_max_ms <= m.election_timeout_min_ms {
            bail!("meta.election_timeout_max_ms must exceed meta.election_timeout_min_ms");
        }
        if m.snapshot_after_entries == 0 {
            bail!("meta.snapshot_after_entries must be greater than 0");
        }
        let b = &self.bootstrap;
        if b.mode == BootstrapMode::Auto {
            if !self.roles.contains(&Role::Meta) {
                bail!("bootstrap.mode = \"auto\" needs the meta role");
            }
            if b.seeds.is_empty() {
                bail!("bootstrap.mode = \"auto\" needs bootstrap.seeds (meta members' host:port)");
            }
            if b.init_node_id == 0 || b.join_timeout_seconds == 0 {
                bail!("bootstrap.init_node_id and bootstrap.join_timeout_seconds must be > 0");
            }
        }
        let stateless = self.roles.contains(&Role::Ingest) || self.roles.contains(&Role::Api);
        if stateless && self.cluster.index_key_file.is_none() {
            bail!("the ingest and api roles need cluster.index_key_file");
        }
        if self.roles.contains(&Role::Ingest) && self.cluster.kek_file.is_none() {
            bail!("the ingest role needs cluster.kek_file");
        }
        if stateless && self.meta_addrs().is_empty() {
            bail!("the ingest and api roles need cluster.meta_addrs (or the meta role)");
        }
        if self.roles.contains(&Role::Ingest) && self.blob.shards.is_empty() {
            bail!("the ingest role needs blob.shards, the shard set it writes to");
        }
        let t = &self.tls;
        let tls_files = [&t.ca_file, &t.cert_file, &t.key_file];
        if tls_files.iter().any(|f| f.is_some()) && !tls_files.iter().all(|f| f.is_some()) {
            bail!("tls.ca_file, tls.cert_file and tls.key_file go together: set all three or none");
        }
        self.check_identity()?;
        let i = &self.ingest;
        if i.max_call_seconds == 0 || i.max_call_bytes == 0 || i.max_concurrent_calls == 0 {
            bail!("ingest limits must be greater than 0");
        }
        if i.max_buffered_bytes < (callvault_blob::MAX_CHUNK_BYTES as u64) * 2 {
            bail!("ingest.max_buffered_bytes must hold at least two chunks (2 MiB)");
        }
        if !(crate::ingest::MIN_BLOCK_BYTES..=crate::ingest::MAX_BLOCK_BYTES)
            .contains(&i.block_bytes)
        {
            bail!(
                "ingest.block_bytes must be between {} and {} (256 KiB to 1 MiB)",
                crate::ingest::MIN_BLOCK_BYTES,
                crate::ingest::MAX_BLOCK_BYTES
            );
        }
        if i.chunk_writes_in_flight == 0 || i.write_quorum == 0 {
            bail!("ingest.chunk_writes_in_flight and ingest.write_quorum must be greater than 0");
        }
        self.check_retention_times()
    }

    /// Times that must fit together: the clock's pace and bound, and the orphan grace against
    /// the longest stream (a shorter grace could remove chunks of a call that still commits).
    fn check_retention_times(&self) -> anyhow::Result<()> {
        let l = &self.lifecycle;
        if l.clock_attest_ms == 0 || l.max_clock_skew_ms < 3 * l.clock_attest_ms {
            bail!(
                "lifecycle.max_clock_skew_ms must be at least three lifecycle.clock_attest_ms (> 0)"
            );
        }
        let floor = crate::ingest::orphan_grace_floor(self.ingest.max_call_seconds).as_secs();
        if l.orphan_grace_seconds < floor {
            bail!(
                "lifecycle.orphan_grace_seconds must be at least {floor} (ingest.max_call_seconds \
                 plus the stream slack and commit window)"
            );
        }
        let shard_floor = self
            .blob
            .orphan_min_age_seconds
            .unwrap_or(l.orphan_grace_seconds);
        if shard_floor < floor || shard_floor > l.orphan_grace_seconds {
            bail!(
                "blob.orphan_min_age_seconds must be between {floor} and \
                 lifecycle.orphan_grace_seconds ({})",
                l.orphan_grace_seconds
            );
        }
        Ok(())
    }

    /// The address peers use.
    pub fn advertise(&self) -> String {
        self.advertise_addr
            .clone()
            .unwrap_or_else(|| self.listen_addr.to_string())
    }

    /// The blob shard's configuration.
    pub fn shard_config(&self) -> anyhow::Result<callvault_blob::ShardConfig> {
        let b = &self.blob;
        let id = b
            .shard_id
            .clone()
            .unwrap_or_else(|| format!("blob-{}", self.node_id));
        let id =
            callvault_blob::ShardId::new(&id).map_err(|e| anyhow::anyhow!("blob.shard_id: {e}"))?;
        let mut config = callvault_blob::ShardConfig::new(id, self.data_dir.join("blob"));
        if let Some(v) = b.listen_addr {
            config.listen_addr = v;
        }
        config.shards = b.shards.clone();
        if let Some(v) = b.replicas {
            config.replicas = v;
        }
        if let Some(v) = b.scrub_bytes_per_second {
            config.scrub_bytes_per_second = v;
        }
        if let Some(v) = b.scrub_interval_seconds {
            config.scrub_interval_seconds = v;
        }
        if let Some(v) = b.collect_min_grace_seconds {
            config.collect_min_grace_seconds = v;
        }
        // Unset, the floor is this node's own orphan grace, so the two always fit.
        config.orphan_min_age_seconds = b
            .orphan_min_age_seconds
            .unwrap_or(self.lifecycle.orphan_grace_seconds);
        if let Some(v) = b.peer_connect_timeout_ms {
            config.peer_connect_timeout_ms = v;
        }
        if let Some(v) = b.peer_request_timeout_ms {
            config.peer_request_timeout_ms = v;
        }
        config.peers = self.peer_table()?;
        config.peer = self.credential(callvault_proto::identity::Role::Blob)?;
        Ok(config)
    }

    /// Where the stateless roles reach the metadata store.
    pub fn meta_addrs(&self) -> Vec<String> {
        if !self.cluster.meta_addrs.is_empty() {
            return self.cluster.meta_addrs.clone();
        }
        if self.roles.contains(&Role::Meta) {
            return vec![self.advertise()];
        }
        Vec::new()
    }

    /// The node's transport security from `[tls]`, or `None` to serve and dial in plaintext.
    pub fn transport_security(
        &self,
    ) -> anyhow::Result<Option<callvault_proto::tls::TransportSecurity>> {
        let (Some(ca), Some(cert), Some(key)) =
            (&self.tls.ca_file, &self.tls.cert_file, &self.tls.key_file)
        else {
            return Ok(None);
        };
        let ca = read_secret(ca, "tls.ca_file")?;
        let cert = read_secret(cert, "tls.cert_file")?;
        let key = read_secret(key, "tls.key_file")?;
        let security = callvault_proto::tls::TransportSecurity::node(
            ca.as_bytes(),
            cert.as_bytes(),
            key.as_bytes(),
        )
        .context("[tls]")?;
        Ok(Some(security))
    }

    /// Without `[tls]`, every role needs its token and a node serving internal RPCs needs the
    /// peers file: there is no way in without an identity.
    fn check_identity(&self) -> anyhow::Result<()> {
        if self.tls.cert_file.is_some() {
            return Ok(());
        }
        let serves_internal = self
            .roles
            .iter()
            .any(|r| matches!(r, Role::Meta | Role::Blob));
        if serves_internal && self.identity.peers_file.is_none() {
            bail!(
                "without [tls], the meta and blob roles need identity.peers_file (role tokens' hashes)"
            );
        }
        for role in &self.roles {
            if self.identity.token_files.of(*role).is_none() {
                bail!(
                    "without [tls], role {} needs identity.token_files.{}",
                    role.identity(),
                    role.identity()
                );
            }
        }
        Ok(())
    }

    /// The role tokens this node's internal services accept (none with `[tls]` and no peers
    /// file: then client certificates alone prove roles).
    pub fn peer_table(&self) -> anyhow::Result<callvault_proto::identity::PeerTable> {
        let Some(file) = &self.identity.peers_file else {
            return Ok(callvault_proto::identity::PeerTable::new([])?);
        };
        let text = read_secret(file, "identity.peers_file")?;
        parse_peers(&text).with_context(|| format!("identity.peers_file {}", file.display()))
    }

    /// How this node acts as `role` towards its peers: the role's token if configured (with
    /// `[tls]`, the node's certificate proves the role and a token is optional).
    pub fn credential(
        &self,
        role: callvault_proto::identity::Role,
    ) -> anyhow::Result<callvault_proto::identity::Credential> {
        let node = format!("node-{}", self.node_id);
        let file = self
            .roles
            .iter()
            .find(|r| r.identity() == role)
            .and_then(|r| self.identity.token_files.of(*r));
        let token = match file {
            Some(file) => Some(
                read_secret(file, "identity.token_files")?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        callvault_proto::identity::Credential::new(role, &node, token.as_deref())
            .map_err(|e| anyhow::anyhow!("identity.token_files.{role}: {e}"))
    }

    /// The key of the dialed-number index, read from `cluster.index_key_file`.
    pub fn index_key(&self) -> anyhow::Result<[u8; 32]> {
        let file = self
            .cluster
            .index_key_file
            .as_ref()
            .context("cluster.index_key_file is not set")?;
        let text = read_secret(file, "cluster.index_key_file")?;
        crate::auth::parse_hex32(text.trim()).with_context(|| {
            format!(
                "cluster.index_key_file {}: expected 64 hex characters",
                file.display()
            )
        })
    }

    /// The key-encryption keys, read from `cluster.kek_file`.
    pub fn key_ring(&self) -> anyhow::Result<callvault_blob::KeyRing> {
        let file = self
            .cluster
            .kek_file
            .as_ref()
            .context("cluster.kek_file is not set")?;
        callvault_blob::KeyRing::load_file(file).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The metadata store's configuration.
    pub fn meta_config(&self) -> anyhow::Result<callvault_meta::MetaConfig> {
        let mut config = callvault_meta::MetaConfig::new(
            self.node_id,
            self.data_dir.join("meta"),
            self.advertise(),
        );
        config.heartbeat_ms = self.meta.heartbeat_ms;
        config.election_timeout_min_ms = self.meta.election_timeout_min_ms;
        config.election_timeout_max_ms = self.meta.election_timeout_max_ms;
        config.snapshot_after_entries = self.meta.snapshot_after_entries;
        config.log_entries_kept_after_snapshot = self.meta.log_entries_kept_after_snapshot;
        config.peer = self.credential(callvault_proto::identity::Role::Meta)?;
        config.clock_bound_ms = i64::try_from(self.lifecycle.max_clock_skew_ms).unwrap_or(i64::MAX);
        config.id_key = match &self.cluster.index_key_file {
            Some(_) => self.index_key()?,
            None => {
                tracing::warn!(
                    "cluster.index_key_file is not set on this meta node: call tombstones are \
                     filed under an all-zero key, which every member must then share"
                );
                [0; 32]
            }
        };
        Ok(config)
    }
}

/// Reads a secret file, with a message that names the setting but never the contents.
fn read_secret(file: &Path, setting: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {setting} {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_local_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local");
        for i in 1..=3 {
            let config = NodeConfig::load(Some(&dir.join(format!("node-{i}.toml")))).unwrap();
            assert_eq!(config.node_id, i);
            assert_eq!(
                config.roles,
                vec![Role::Meta, Role::Blob, Role::Ingest, Role::Api]
            );
            assert_eq!(config.bootstrap.mode, BootstrapMode::Auto);
            assert_eq!(config.bootstrap.seeds.len(), 3);
            assert_eq!(config.meta_addrs().len(), 3);
            // The shard's id defaults to blob-<node_id>, which the shard set must name.
            assert_eq!(config.blob.shards.len(), 3);
            assert!(config.blob.shard_id.is_none());
            assert_eq!(
                config.blob.shards[i as usize - 1].id.to_string(),
                format!("blob-{i}")
            );
        }
    }

    #[test]
    fn misspelt_environment_variables_are_named() {
        let vars = [
            "CALLVAULT_ADVERTISE_ADDR",
            "CALLVAULT_META__HEARTBEAT_MS",
            "CALLVAULT_LOG",
            "CALLVAULT_ADVERTISE_ADR",
            "CALLVAULT_BOOTSTRAPP__MODE",
            "HOME",
        ];
        assert_eq!(
            unknown_env_vars(vars),
            ["CALLVAULT_ADVERTISE_ADR", "CALLVAULT_BOOTSTRAPP__MODE"]
        );
    }

    #[test]
    fn node_ids_come_from_statefulset_ordinals() {
        assert_eq!(node_id_from_ordinal("callvault-meta-0").unwrap(), 1);
        assert_eq!(node_id_from_ordinal("callvault-meta-4").unwrap(), 5);
        assert_eq!(node_id_from_ordinal("x-17").unwrap(), 18);
        for bad in ["callvault-meta", "meta-", "meta-1a", "7", "meta-+1", ""] {
            assert!(node_id_from_ordinal(bad).is_err(), "{bad}");
        }
        assert!(node_id_from_ordinal(&format!("m-{}", u64::MAX)).is_err());
    }

    /// An `[identity]` section for test configs of a meta or blob node without TLS.
    const IDENTITY: &str =
        "[identity]\npeers_file = \"p\"\ntoken_files = { meta = \"m\", blob = \"b\" }\n";

    #[test]
    fn without_tls_every_role_needs_its_token_and_servers_the_peers_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        let base = "node_id = 1\ndata_dir = \"d\"\nlisten_addr = \"127.0.0.1:1\"\n";
        std::fs::write(&path, base).unwrap();
        let err = format!("{:#}", NodeConfig::load(Some(&path)).unwrap_err());
        assert!(err.contains("identity.peers_file"), "{err}");
        std::fs::write(&path, format!("{base}[identity]\npeers_file = \"p\"\n")).unwrap();
        let err = format!("{:#}", NodeConfig::load(Some(&path)).unwrap_err());
        assert!(err.contains("identity.token_files.meta"), "{err}");
        std::fs::write(&path, format!("{base}{IDENTITY}")).unwrap();
        assert!(NodeConfig::load(Some(&path)).is_ok());
        let peers = format!(
            "[[peer]]\nrole = \"ingest\"\ntoken_blake3 = \"{}\"\n",
            "ab".repeat(32)
        );
        assert!(parse_peers(&peers).is_ok());
        assert!(parse_peers(&peers.replace("ingest", "root")).is_err());
        assert!(
            parse_peers(&format!("{peers}{peers}")).is_err(),
            "one token, two entries"
        );
    }

    #[test]
    fn a_pod_config_may_leave_node_id_to_the_ordinal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = \"d\"\nlisten_addr = \"0.0.0.0:7101\"\n\
                 [bootstrap]\nmode = \"auto\"\nseeds = [\"m-0.m:7101\"]\n{IDENTITY}"
            ),
        )
        .unwrap();
        assert!(
            NodeConfig::load(Some(&path)).is_err(),
            "node_id is required"
        );
        let config = NodeConfig::load_with_node_id(Some(&path), 3).unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(config.bootstrap.init_node_id, 1);
        std::fs::write(
            &path,
            "node_id = 1\ndata_dir = \"d\"\nlisten_addr = \"0.0.0.0:7101\"\n\
             roles = [\"blob\"]\n[bootstrap]\nmode = \"auto\"\nseeds = [\"m:1\"]\n",
        )
        .unwrap();
        let err = NodeConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("meta role"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        let base = "node_id = 1\ndata_dir = \"d\"\nlisten_addr = \"127.0.0.1:1\"\n";
        std::fs::write(&path, format!("{base}colour = \"blue\"\n")).unwrap();
        assert!(NodeConfig::load(Some(&path)).is_err());
        std::fs::write(&path, base.replace("node_id = 1", "node_id = 0")).unwrap();
        // (node_id is checked before the identity)
        let err = NodeConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("node_id"), "{err}");
        std::fs::write(&path, format!("{base}[meta]\nheartbeat_ms = 5000\n")).unwrap();
        assert!(NodeConfig::load(Some(&path)).is_err());
    }

    #[test]
    fn an_orphan_grace_shorter_than_the_longest_stream_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        let base = "node_id = 1\ndata_dir = \"d\"\nlisten_addr = \"127.0.0.1:1\"\n\
                    roles = [\"meta\"]\n[identity]\npeers_file = \"p\"\ntoken_files.meta = \"t\"\n";
        let load = |extra: &str| {
            std::fs::write(&path, format!("{base}{extra}")).unwrap();
            NodeConfig::load(Some(&path)).map_err(|e| format!("{e:#}"))
        };
        // A 60 s call may stream 90 s and commit within 30 s more: 120 s is the floor.
        let short = "[ingest]\nmax_call_seconds = 60\n[lifecycle]\norphan_grace_seconds = 119\n";
        let err = load(short).unwrap_err();
        assert!(
            err.contains("orphan_grace_seconds must be at least 120"),
            "{err}"
        );
        let fits = "[ingest]\nmax_call_seconds = 60\n[lifecycle]\norphan_grace_seconds = 120\n";
        load(fits).unwrap();
        let floor = format!("{fits}[blob]\norphan_min_age_seconds = 100\n");
        assert!(
            load(&floor)
                .unwrap_err()
                .contains("blob.orphan_min_age_seconds")
        );
        let skew = "[lifecycle]\nclock_attest_ms = 1000\nmax_clock_skew_ms = 2000\n";
        assert!(load(skew).unwrap_err().contains("max_clock_skew_ms"));
    }

    #[test]
    fn tls_files_go_together_and_bad_pem_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        let base = "node_id = 1\ndata_dir = \"d\"\nlisten_addr = \"127.0.0.1:1\"\n";
        std::fs::write(&path, format!("{base}[tls]\nca_file = \"ca.pem\"\n")).unwrap();
        let err = format!("{:#}", NodeConfig::load(Some(&path)).unwrap_err());
        assert!(err.contains("set all three or none"), "{err}");

        for name in ["ca.pem", "node.pem", "node.key"] {
            std::fs::write(dir.path().join(name), "not PEM").unwrap();
        }
        let files = ["ca_file", "cert_file", "key_file"]
            .iter()
            .zip(["ca.pem", "node.pem", "node.key"])
            .map(|(key, name)| format!("{key} = {:?}\n", dir.path().join(name)))
            .collect::<String>();
        std::fs::write(&path, format!("{base}[tls]\n{files}")).unwrap();
        let config = NodeConfig::load(Some(&path)).unwrap();
        let err = format!("{:#}", config.transport_security().unwrap_err());
        assert!(err.contains("[tls]") && err.contains("ca"), "{err}");

        std::fs::write(&path, format!("{base}{IDENTITY}")).unwrap();
        let config = NodeConfig::load(Some(&path)).unwrap();
        assert!(config.transport_security().unwrap().is_none());
    }
}
