//! The command line: one subcommand per operator task.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{NodeConfig, Role};

mod admin;
mod audit;
mod changes;
mod client;
mod cluster;
mod dev;
mod lifecycle;
mod load;
mod policy;
mod policy_admin;
mod query;

/// callvault: storage for correctional-facility call recordings that cannot keep what it must not.
#[derive(Debug, Parser)]
#[command(name = "callvault", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a node: its roles from the config file, CALLVAULT_* variables, or --roles.
    Serve {
        /// TOML config file (see deploy/local/ for examples).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Roles to run, overriding the config (comma-separated).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<Role>,
        /// Takes node_id from a StatefulSet pod name: its ordinal plus one (`meta-0` is node 1).
        #[arg(long, value_name = "POD_NAME")]
        node_id_from_ordinal: Option<String>,
    },
    /// Node configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Membership of the metadata store.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// The tamper-evident audit log: keys, verification, following it.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Retention policies: check a file, put it in force, read the policy in force.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    #[command(flatten)]
    Query(query::QueryCommand),
    #[command(flatten)]
    Admin(admin::AdminCommand),
    #[command(flatten)]
    Lifecycle(lifecycle::LifecycleCommand),
    /// Changes waiting for a second principal or a notice period: list, approve, cancel.
    #[command(subcommand)]
    Change(changes::ChangeCommand),
    /// Streams synthetic calls to Ingest and reports what the cluster did with them.
    Load(load::LoadArgs),
    /// Runs a local three-node cluster (every role, dev secrets and tokens) until Ctrl-C.
    Dev(dev::DevArgs),
}

/// `callvault config …`.
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Loads a node configuration exactly as `serve` would (the file, CALLVAULT_* variables, the
    /// same flags), checks it, prints what the node would run, and exits: non-zero, naming the
    /// key, for an unknown key or a bad value. Secret files are not read.
    Check {
        /// TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Roles to run, overriding the config (comma-separated).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<Role>,
        /// Takes node_id from a StatefulSet pod name: its ordinal plus one.
        #[arg(long, value_name = "POD_NAME")]
        node_id_from_ordinal: Option<String>,
    },
}

/// The node configuration `serve` and `config check` run with.
fn node_config(
    file: Option<&std::path::Path>,
    roles: Vec<Role>,
    node_id_from_ordinal: Option<&str>,
) -> anyhow::Result<NodeConfig> {
    let mut config = match node_id_from_ordinal {
        Some(pod) => {
            NodeConfig::load_with_node_id(file, crate::config::node_id_from_ordinal(pod)?)?
        }
        None => NodeConfig::load(file)?,
    };
    if !roles.is_empty() {
        config.roles = roles;
    }
    Ok(config)
}

/// With `CALLVAULT_TLS_CA_FILE` set, the client commands reach nodes over TLS, trusting that CA
/// and expecting the dialed host's name in the certificate, or `CALLVAULT_TLS_SERVER_NAME`.
fn install_client_tls_from_env() -> anyhow::Result<()> {
    let Some(ca_file) = std::env::var_os("CALLVAULT_TLS_CA_FILE").filter(|f| !f.is_empty()) else {
        return Ok(());
    };
    let ca = std::fs::read(&ca_file).with_context(|| {
        format!(
            "cannot read CALLVAULT_TLS_CA_FILE {}",
            std::path::Path::new(&ca_file).display()
        )
    })?;
    let server_name = std::env::var("CALLVAULT_TLS_SERVER_NAME")
        .ok()
        .filter(|n| !n.is_empty());
    let security = callvault_proto::tls::TransportSecurity::client(&ca, server_name.as_deref())
        .context("CALLVAULT_TLS_CA_FILE")?;
    callvault_proto::tls::install(security)?;
    Ok(())
}

/// A connected channel to a node's gRPC endpoint at `addr` (`host:port`), for CLI commands.
async fn connect(
    addr: &str,
    request_timeout: std::time::Duration,
) -> anyhow::Result<tonic::transport::Channel> {
    use anyhow::Context;
    callvault_proto::tls::endpoint(addr)
        .with_context(|| format!("invalid address {addr:?}"))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(request_timeout)
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))
}

/// [`connect`], presenting the token in `CALLVAULT_TOKEN` with every request and signing each
/// with the key in `CALLVAULT_KEY_FILE`, if set (for the `cluster` and `audit` commands, which
/// need an operator's or an auditor's token).
async fn connect_with_env_token(
    addr: &str,
    request_timeout: std::time::Duration,
) -> anyhow::Result<callvault_proto::auth::AuthChannel> {
    use anyhow::Context;
    let token = std::env::var("CALLVAULT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .context("no token: set CALLVAULT_TOKEN")?;
    let bearer = callvault_proto::auth::Bearer::new(&token)?;
    let channel = connect(addr, request_timeout).await?;
    match std::env::var_os("CALLVAULT_KEY_FILE").filter(|f| !f.is_empty()) {
        Some(file) => Ok(bearer.signed_channel(
            channel,
            client::load_signing_key(std::path::Path::new(&file))?,
        )),
        None => Ok(bearer.channel(channel)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs a client command to completion; its error, if any, becomes exit code 1 in `main`.
fn block_on(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(command)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A node takes its TLS settings from its config; the client commands from the environment.
    let is_client = !matches!(
        cli.command,
        Command::Serve { .. } | Command::Config(_) | Command::Dev(_)
    );
    if is_client {
        install_client_tls_from_env()?;
    }
    match cli.command {
        Command::Serve {
            config,
            roles,
            node_id_from_ordinal,
        } => {
            let config = node_config(config.as_deref(), roles, node_id_from_ordinal.as_deref())?;
            runtime()?.block_on(async {
                // Logs, and OTLP export when OTEL_* asks for it (see `telemetry`).
                let telemetry = crate::telemetry::init(config.node_id)?;
                let served = crate::serve::serve(config).await;
                // The exporters flush through this runtime: wait for them off its workers.
                tokio::task::spawn_blocking(move || {
                    telemetry.shutdown(crate::telemetry::SHUTDOWN_FLUSH_LIMIT)
                })
                .await
                .context("telemetry shutdown")?;
                served
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check {
            config: file,
            roles,
            node_id_from_ordinal,
        }) => {
            let config = node_config(file.as_deref(), roles, node_id_from_ordinal.as_deref())?;
            let env: Vec<String> = std::env::vars_os()
                .filter_map(|(k, _)| k.into_string().ok())
                .collect();
            let unknown = crate::config::unknown_env_vars(env.iter().map(String::as_str));
            if !unknown.is_empty() {
                anyhow::bail!(
                    "{} would be ignored: neither a configuration key nor a variable callvault reads",
                    unknown.join(", ")
                );
            }
            // The TLS files are secrets mounted only where the node runs: named, not read.
            let tls = if config.tls.ca_file.is_some() {
                "on"
            } else {
                "off"
            };
            let name = file
                .as_deref()
                .map_or("(no file)".into(), |f| f.display().to_string());
            println!(
                "{name}: valid: node {} roles {:?} listen {} advertise {} bootstrap {:?} tls {tls} data {}",
                config.node_id,
                config.roles,
                config.listen_addr,
                config.advertise(),
                config.bootstrap.mode,
                config.data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(command) => {
            runtime()?.block_on(cluster::run(command))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(command) => runtime()?.block_on(audit::run(command)),
        Command::Policy(command) => policy::run(command),
        Command::Query(command) => block_on(query::run(command)),
        Command::Admin(command) => block_on(admin::run(command)),
        Command::Lifecycle(command) => block_on(lifecycle::run(command)),
        Command::Change(command) => block_on(changes::run(command)),
        Command::Load(args) => runtime()?.block_on(load::run(args)),
        Command::Dev(args) => block_on(dev::run(args)),
    }
}
