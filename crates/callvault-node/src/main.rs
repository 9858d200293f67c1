//! `callvault`: one binary for every role of the cluster and for its operators.

use std::process::ExitCode;

use clap::Parser;

mod api;
mod auth;
mod auth_failures;
mod bootstrap;
mod cli;
mod clock;
mod config;
mod content;
mod ingest;
mod lifecycle;
mod metrics;
mod orphans;
mod serve;
mod sweeper;
mod telemetry;

fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = callvault_meta::failpoints::setup();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
