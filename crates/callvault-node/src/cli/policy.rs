//! `callvault policy …`: check a policy file before it is put in force; `put`, `put-all` and
//! `get` (in `policy_admin`) talk to a node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use callvault_core::policy::parse_policy_file;
use clap::Subcommand;

use super::policy_admin;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parses and validates a policy file and prints a per-jurisdiction summary. Exits non-zero,
    /// naming the line and field, if anything is wrong.
    Check {
        /// The policy file, e.g. deploy/policies/default.toml.
        file: PathBuf,
        /// Also fail when a state, DC or the federal prisons system has no policy.
        #[arg(long)]
        require_all: bool,
    },
    /// Puts a jurisdiction's policy from a policy file in force on a node.
    Put(policy_admin::PutArgs),
    /// Puts every policy of a file in force, skipping jurisdictions whose policy is unchanged.
    PutAll(policy_admin::PutAllArgs),
    /// Shows the policy in force on a node, or a past version.
    Get(policy_admin::GetArgs),
}

pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { file, require_all } => check(&file, require_all),
        PolicyCommand::Put(args) => super::block_on(policy_admin::put_one(args)),
        PolicyCommand::PutAll(args) => super::block_on(policy_admin::put_all(args)),
        PolicyCommand::Get(args) => super::block_on(policy_admin::get(args)),
    }
}

fn check(file: &PathBuf, require_all: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read policy file {}", file.display()))?;
    let set = match parse_policy_file(&file.display().to_string(), &text) {
        Ok(set) => set,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "{:<8} {:<28} {:>9} {:>11} {:<12} {:>6} {:>8}",
        "code", "jurisdiction", "recording", "call-detail", "privileged", "sweep", "holds"
    );
    for (jurisdiction, policy) in set.iter() {
        println!(
            "{:<8} {:<28} {:>8}d {:>10}d {:<12} {:>5}s {:>8}",
            jurisdiction.code(),
            jurisdiction.name(),
            policy.recording_retention_days,
            policy.call_detail_retention_days,
            policy.privileged_retention.as_str(),
            policy.sweep_interval_seconds,
            if policy.hold_requires_review_date {
                format!("<={}d", policy.hold_max_review_days)
            } else {
                "any".to_string()
            },
        );
    }
    let missing = set.missing_required();
    println!("{}: {} jurisdictions, all valid", file.display(), set.len());
    if missing.is_empty() {
        println!("every state, DC and US-BOP has a policy");
        return Ok(ExitCode::SUCCESS);
    }
    let codes: Vec<&str> = missing.iter().map(|j| j.code()).collect();
    println!(
        "no policy (calls for these are refused): {}",
        codes.join(", ")
    );
    Ok(if require_all {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
