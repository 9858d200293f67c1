//! `callvault registry …` and `callvault flag`: privileged and sensitive numbers, and privilege
//! flags on single calls, through the Admin service.

use callvault_proto::v1 as pb;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::client::{ClientArgs, REQUEST_TIMEOUT, label, rfc3339_json, rfc3339_or_dash, rpc_error};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// The privileged-number registry and sensitive numbers.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Marks one recorded call privileged (e.g. a reviewer heard an attorney): it is
    /// crypto-shredded. A registry principal flags at once; an agency principal asks with
    /// --request, and a registry principal approves (callvault change approve).
    Flag(FlagArgs),
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Registers a privileged number. Every past recording of a call to it in the jurisdiction
    /// is crypto-shredded in the same commit.
    Add {
        /// Jurisdiction code, e.g. US-TX.
        jurisdiction: String,
        /// The number, in any formatting ("(512) 555-0142", "+15125550142", ...).
        number: String,
        /// Why the number is privileged.
        #[arg(long, value_enum)]
        kind: PrivilegeKindArg,
        /// Evidence for the registration, e.g. "TX bar 24012345".
        #[arg(long)]
        evidence: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lists a jurisdiction's privileged numbers.
    List {
        /// Jurisdiction code, e.g. US-TX.
        jurisdiction: String,
        /// Follow every page instead of printing only the first.
        #[arg(long)]
        all: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Registers a sensitive number: calls to it are recorded but sealed, and every access to
    /// them raises an alert.
    AddSensitive {
        /// Jurisdiction code, e.g. US-TX.
        jurisdiction: String,
        /// The number, in any formatting.
        number: String,
        /// Why calls to it are sealed, e.g. "victim advocate hotline".
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `--kind` of `registry add`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PrivilegeKindArg {
    Attorney,
    Clergy,
    Physician,
    Other,
}

impl From<PrivilegeKindArg> for pb::PrivilegeKind {
    fn from(kind: PrivilegeKindArg) -> Self {
        match kind {
            PrivilegeKindArg::Attorney => pb::PrivilegeKind::Attorney,
            PrivilegeKindArg::Clergy => pb::PrivilegeKind::Clergy,
            PrivilegeKindArg::Physician => pb::PrivilegeKind::Physician,
            PrivilegeKindArg::Other => pb::PrivilegeKind::Other,
        }
    }
}

#[derive(Debug, Args)]
pub struct FlagArgs {
    /// Jurisdiction code, e.g. US-TX.
    jurisdiction: String,
    /// The platform's call id.
    call_id: String,
    /// Why the call is privileged.
    #[arg(long)]
    reason: String,
    /// Evidence, e.g. the reviewer's note.
    #[arg(long, default_value = "")]
    evidence: String,
    /// Ask for the flag (an agency principal): it waits for a registry principal's approval.
    #[arg(long)]
    request: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Registry(RegistryCommand::Add {
            jurisdiction,
            number,
            kind,
            evidence,
            client,
        }) => {
            let conn = client.connect(REQUEST_TIMEOUT).await?;
            let r = conn
                .admin()
                .register_privileged_number(pb::RegisterPrivilegedNumberRequest {
                    jurisdiction,
                    number,
                    kind: pb::PrivilegeKind::from(kind) as i32,
                    evidence,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            println!(
                "registered {} ({} past recordings purged)",
                r.normalized_number, r.calls_purged
            );
        }
        AdminCommand::Registry(RegistryCommand::List {
            jurisdiction,
            all,
            json,
            client,
        }) => list(&client, jurisdiction, all, json).await?,
        AdminCommand::Registry(RegistryCommand::AddSensitive {
            jurisdiction,
            number,
            reason,
            client,
        }) => {
            let conn = client.connect(REQUEST_TIMEOUT).await?;
            let r = conn
                .admin()
                .register_sensitive_number(pb::RegisterSensitiveNumberRequest {
                    jurisdiction,
                    number,
                    reason,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            println!("registered sensitive number {}", r.normalized_number);
        }
        AdminCommand::Flag(args) if args.request => {
            let conn = args.client.connect(REQUEST_TIMEOUT).await?;
            let change = conn
                .admin()
                .request_privilege_flag(pb::FlagPrivilegedRequest {
                    jurisdiction: args.jurisdiction,
                    call_id: args.call_id,
                    reason: args.reason,
                    evidence: args.evidence,
                })
                .await
                .map_err(rpc_error)?
                .into_inner()
                .change
                .unwrap_or_default();
            super::changes::print_change(&change);
        }
        AdminCommand::Flag(args) => {
            let conn = args.client.connect(REQUEST_TIMEOUT).await?;
            let r = conn
                .admin()
                .flag_privileged(pb::FlagPrivilegedRequest {
                    jurisdiction: args.jurisdiction.clone(),
                    call_id: args.call_id.clone(),
                    reason: args.reason,
                    evidence: args.evidence,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let call = format!("{}/{}", args.jurisdiction, args.call_id);
            if r.purged {
                println!("{call} flagged privileged and purged");
            } else {
                println!("{call} was already purged");
            }
        }
    }
    Ok(())
}

async fn list(
    client: &ClientArgs,
    jurisdiction: String,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let conn = client.connect(REQUEST_TIMEOUT).await?;
    let mut admin = conn.admin();
    let mut request = pb::ListPrivilegedNumbersRequest {
        jurisdiction: jurisdiction.clone(),
        ..Default::default()
    };
    let mut numbers = Vec::new();
    let next_page_token = loop {
        let page = admin
            .list_privileged_numbers(request.clone())
            .await
            .map_err(rpc_error)?
            .into_inner();
        numbers.extend(page.numbers);
        if page.next_page_token.is_empty() || !all {
            break page.next_page_token;
        }
        anyhow::ensure!(
            page.next_page_token != request.page_token,
            "the server returned the same page token twice"
        );
        request.page_token = page.next_page_token;
    };
    if json {
        let numbers: Vec<_> = numbers
            .iter()
            .map(|n| {
                json!({
                    "normalized_number": n.normalized_number,
                    "kind": label::<pb::PrivilegeKind>(n.kind),
                    "evidence": n.evidence,
                    "registrant": n.registrant,
                    "registered_at": rfc3339_json(n.registered_at.as_ref()),
                })
            })
            .collect();
        let value = json!({
            "jurisdiction": jurisdiction,
            "numbers": numbers,
            "next_page_token": next_page_token,
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "{:<16} {:<10} {:<20} {:<24} evidence",
        "number", "kind", "registered", "registrant"
    );
    for n in &numbers {
        println!(
            "{:<16} {:<10} {:<20} {:<24} {}",
            n.normalized_number,
            label::<pb::PrivilegeKind>(n.kind),
            rfc3339_or_dash(n.registered_at.as_ref()),
            n.registrant,
            n.evidence
        );
    }
    if next_page_token.is_empty() {
        println!("{} numbers", numbers.len());
    } else {
        println!("{} numbers shown; more exist (use --all)", numbers.len());
    }
    Ok(())
}
