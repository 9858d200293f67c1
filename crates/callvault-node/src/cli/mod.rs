//! The command line: one subcommand per operator task.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod policy;

/// callvault: storage for correctional-facility call recordings that cannot keep what it must not.
#[derive(Debug, Parser)]
#[command(name = "callvault", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Retention policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Policy(command) => policy::run(command),
    }
}
