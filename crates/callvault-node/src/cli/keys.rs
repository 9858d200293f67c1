//! `callvault keys …`: the jurisdictions' key pairs of key custody.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use callvault_blob::JurisdictionKeyPairs;
use callvault_core::Jurisdiction;
use clap::{Args, Subcommand};

/// `callvault keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Makes a key pair per jurisdiction: the private keys for the keys role's Secret alone, the
    /// public keys for ingest. Never overwrites a file.
    Keygen(KeygenArgs),
}

/// `callvault keys keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private keys (mode 0600).
    #[arg(long)]
    private_out: PathBuf,
    /// Where to write the public keys.
    #[arg(long)]
    public_out: PathBuf,
    /// The jurisdictions (default: every one).
    #[arg(long, value_delimiter = ',')]
    jurisdictions: Vec<Jurisdiction>,
}

/// Runs `callvault keys …`.
pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let KeysCommand::Keygen(args) = command;
    for path in [&args.private_out, &args.public_out] {
        if path.exists() {
            bail!("{} exists: keys are never overwritten", path.display());
        }
    }
    let jurisdictions = if args.jurisdictions.is_empty() {
        Jurisdiction::ALL.to_vec()
    } else {
        args.jurisdictions.clone()
    };
    let pairs = JurisdictionKeyPairs::generate(jurisdictions)
        .map_err(|e| anyhow::anyhow!("key generation: {e}"))?;
    super::dev::write_secret_once(&args.private_out, &pairs.to_file_text())?;
    std::fs::write(&args.public_out, pairs.public_keys().to_file_text())
        .with_context(|| format!("cannot write {}", args.public_out.display()))?;
    println!(
        "{} jurisdictions: private keys in {} (the keys role's Secret only), public keys in {}",
        pairs.jurisdictions().count(),
        args.private_out.display(),
        args.public_out.display()
    );
    Ok(ExitCode::SUCCESS)
}
