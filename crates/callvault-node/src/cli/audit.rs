//! `callvault audit …`: the log's key, verification by auditors, and following the log.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use callvault_audit::{
    AuditEntry, Checkpoint, ConsistencyProof, InclusionProof, NoteSigner, NoteVerifier,
    proof::hashes_from_bytes,
};
use callvault_core::codec::VersionedRecord;
use callvault_proto::auth::AuthChannel;
use callvault_proto::v1 as pb;
use callvault_proto::v1::audit_client::AuditClient;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Creates the log's Ed25519 key: writes the private key (mode 0600) and prints the public
    /// verifier key that auditors pin.
    Keygen {
        /// The key name, conventionally the log's origin, e.g. callvault.example.gov/audit.
        #[arg(long)]
        name: String,
        /// Where to write the private key. Keep it in a secret store.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verifies the log as an auditor: the latest checkpoint's signature against the pinned key,
    /// its consistency with a saved checkpoint, and the inclusion of given entries. Exits 0 only
    /// if everything holds.
    Verify {
        /// host:port of any callvault meta node.
        #[arg(long)]
        node: String,
        /// The log's verifier key (`name+id+key`, printed by keygen).
        #[arg(long)]
        vkey: String,
        /// The log's origin line.
        #[arg(long)]
        origin: String,
        /// A previously verified checkpoint (signed note file) the log must extend.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Where to save the newly verified checkpoint for next time.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Entry sequence numbers whose inclusion to check.
        #[arg(long = "entry")]
        entries: Vec<u64>,
    },
    /// Prints new entries as they are appended, until Ctrl-C.
    Tail {
        /// host:port of any callvault meta node.
        #[arg(long)]
        node: String,
        /// The first sequence to print (default: the current end of the log).
        #[arg(long)]
        from: Option<u64>,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Keygen { name, out } => keygen(&name, &out),
        AuditCommand::Verify {
            node,
            vkey,
            origin,
            checkpoint,
            save,
            entries,
        } => {
            let verifier =
                NoteVerifier::from_vkey(&vkey).map_err(|e| anyhow::anyhow!("--vkey: {e}"))?;
            let mut client = client(&node).await?;
            match verify(&mut client, &verifier, &origin, checkpoint, &entries).await {
                Ok(note) => {
                    if let Some(path) = save {
                        std::fs::write(&path, &note)
                            .with_context(|| format!("cannot save {}", path.display()))?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("FAILED: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Tail { node, from } => tail(&node, from).await,
    }
}

/// A new log key named `name`: the private key text (`PRIVATE+KEY+…`) and its verifier key.
pub(super) fn new_log_key(name: &str) -> anyhow::Result<(String, String)> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let signer = NoteSigner::from_seed(name, &seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut raw = vec![0x01];
    raw.extend_from_slice(&seed);
    seed.fill(0);
    let skey = format!(
        "PRIVATE+KEY+{name}+{:08x}+{}",
        signer.key_id(),
        STANDARD.encode(&raw)
    );
    raw.fill(0);
    // The check that from_encoded accepts what we wrote guards the format.
    NoteSigner::from_encoded(&skey).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((skey, signer.verifier().vkey()))
}

fn keygen(name: &str, out: &PathBuf) -> anyhow::Result<ExitCode> {
    let (skey, vkey) = new_log_key(name)?;
    write_private(out, skey.as_bytes())?;
    println!("{vkey}");
    eprintln!(
        "private key written to {}; pin the line above in auditors' `callvault audit verify --vkey`",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &PathBuf, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

async fn client(addr: &str) -> anyhow::Result<AuditClient<AuthChannel>> {
    Ok(AuditClient::new(
        super::connect_with_env_token(addr, Duration::from_secs(30)).await?,
    ))
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", e.code(), e.message())
}

/// Checks everything; returns the verified signed note.
pub async fn verify(
    client: &mut AuditClient<AuthChannel>,
    verifier: &NoteVerifier,
    origin: &str,
    saved: Option<PathBuf>,
    entries: &[u64],
) -> anyhow::Result<String> {
    let served = client
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let latest =
        Checkpoint::open(&served.signed_note, verifier, origin).context("latest checkpoint")?;
    println!(
        "checkpoint: size {}, root {}, signature valid",
        latest.size(),
        latest.root()
    );

    if let Some(path) = saved {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let trusted = Checkpoint::open(&text, verifier, origin)
            .with_context(|| format!("saved checkpoint {}", path.display()))?;
        if trusted.size() > latest.size() {
            bail!(
                "the log shrank from {} to {} entries (truncation or rollback)",
                trusted.size(),
                latest.size()
            );
        }
        let hashes = if trusted.size() == 0 || trusted.size() == latest.size() {
            Vec::new()
        } else {
            let proof = client
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    first: trusted.size(),
                    second: latest.size(),
                })
                .await
                .map_err(status)?
                .into_inner();
            hashes_from_bytes(&proof.hashes)?
        };
        latest
            .verify_extends(
                &trusted,
                &ConsistencyProof {
                    first: trusted.size(),
                    second: latest.size(),
                    hashes,
                },
            )
            .context("the log does not extend the saved checkpoint (fork, rewrite or rollback)")?;
        println!(
            "consistent with the saved checkpoint of size {}",
            trusted.size()
        );
    }

    for &index in entries {
        let got = client
            .get_entries(pb::GetEntriesRequest {
                start: index,
                end: index + 1,
            })
            .await
            .map_err(status)?
            .into_inner();
        let entry = got
            .entries
            .into_iter()
            .find(|e| e.sequence == index)
            .with_context(|| format!("entry {index} is not served"))?;
        let decoded = AuditEntry::decode(&entry.leaf)
            .with_context(|| format!("entry {index}: leaf bytes do not decode"))?;
        if decoded.sequence() != index {
            bail!(
                "entry {index}: its bytes say sequence {}",
                decoded.sequence()
            );
        }
        let proof = client
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                index,
                tree_size: latest.size(),
            })
            .await
            .map_err(status)?
            .into_inner();
        InclusionProof {
            leaf_index: index,
            tree_size: latest.size(),
            hashes: hashes_from_bytes(&proof.hashes)?,
        }
        .verify(&callvault_audit::leaf_hash(&entry.leaf), latest.root())
        .with_context(|| format!("entry {index} is not in the log at size {}", latest.size()))?;
        println!(
            "entry {index} included: {} {} {}",
            decoded.event().name(),
            decoded.subject(),
            decoded.outcome()
        );
    }
    Ok(served.signed_note)
}

async fn tail(node: &str, from: Option<u64>) -> anyhow::Result<ExitCode> {
    let mut client = client(node).await?;
    let mut next = match from {
        Some(n) => n,
        // The end of the log: the size the node reports with an empty range.
        None => {
            client
                .get_entries(pb::GetEntriesRequest { start: 0, end: 0 })
                .await
                .map_err(status)?
                .into_inner()
                .tree_size
        }
    };
    loop {
        let end = next.saturating_add(1000);
        let got = tokio::select! {
            got = client.get_entries(pb::GetEntriesRequest { start: next, end }) => got.map_err(status)?.into_inner(),
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        for e in &got.entries {
            println!(
                "{} {} {} {} {} {} {}",
                e.sequence,
                e.time.as_ref().map_or(0, |t| t.seconds),
                e.event,
                if e.jurisdiction.is_empty() {
                    "-"
                } else {
                    &e.jurisdiction
                },
                e.principal,
                e.subject,
                e.outcome
            );
        }
        // An agency sees only its jurisdictions' entries: the sequence numbers between them are
        // other entries, so go on from the end of what the node had, not from the last shown.
        let after_last = got.entries.last().map_or(next, |e| e.sequence + 1);
        let advanced = after_last.max(end.min(got.tree_size)).max(next);
        if advanced == next {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            }
        }
        next = advanced;
    }
}
