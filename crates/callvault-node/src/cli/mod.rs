//! The command line: one subcommand per operator task.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{NodeConfig, Role};

mod admin;
mod audit;
mod client;
mod cluster;
mod dev;
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
    },
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
    /// Streams synthetic calls to Ingest and reports what the cluster did with them.
    Load(load::LoadArgs),
    /// Runs a local three-node cluster (every role, dev secrets and tokens) until Ctrl-C.
    Dev(dev::DevArgs),
}

/// A connected channel to a node's gRPC endpoint at `addr` (`host:port`), for CLI commands.
async fn connect(
    addr: &str,
    request_timeout: std::time::Duration,
) -> anyhow::Result<tonic::transport::Channel> {
    use anyhow::Context;
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("invalid address {addr:?}"))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(request_timeout)
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))
}

/// [`connect`], presenting the token in `CALLVAULT_TOKEN` with every request (for the `cluster`
/// and `audit` commands, which need an operator's or an auditor's token).
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
    Ok(bearer.channel(connect(addr, request_timeout).await?))
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
    match cli.command {
        Command::Serve { config, roles } => {
            let mut config = NodeConfig::load(config.as_deref())?;
            if !roles.is_empty() {
                config.roles = roles;
            }
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
        Command::Cluster(command) => {
            runtime()?.block_on(cluster::run(command))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(command) => runtime()?.block_on(audit::run(command)),
        Command::Policy(command) => policy::run(command),
        Command::Query(command) => block_on(query::run(command)),
        Command::Admin(command) => block_on(admin::run(command)),
        Command::Load(args) => runtime()?.block_on(load::run(args)),
        Command::Dev(args) => block_on(dev::run(args)),
    }
}
