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
];

/// A role a node plays. A laptop runs every role in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A voter or learner of the Raft-replicated metadata store.
    Meta,
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
}

impl AuditSection {
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
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: NodeConfig = figment
            .merge(
                Env::prefixed("CALLVAULT_")
                    .filter(|key| {
                        let top = key.as_str().split("__").next().unwrap_or_default();
                        ENV_KEYS.iter().any(|k| top.eq_ignore_ascii_case(k))
                    })
                    .split("__"),
            )
            .extract()
            .with_context(|| match file {
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
        Ok(())
    }

    /// The address peers use.
    pub fn advertise(&self) -> String {
        self.advertise_addr
            .clone()
            .unwrap_or_else(|| self.listen_addr.to_string())
    }

    /// The metadata store's configuration.
    pub fn meta_config(&self) -> callvault_meta::MetaConfig {
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
        config
    }
}
