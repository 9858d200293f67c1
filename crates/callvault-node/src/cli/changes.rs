//! `callvault change list|approve|cancel`: changes that wait for a second principal or a notice
//! period (a policy that shortens retention, an agency's privilege-flag request, a bulk export),
//! through the Admin service.

use callvault_proto::v1 as pb;
use clap::Subcommand;

use super::client::{ClientArgs, REQUEST_TIMEOUT, label, rfc3339_or_dash, rpc_error};

#[derive(Debug, Subcommand)]
pub enum ChangeCommand {
    /// Lists a jurisdiction's pending changes.
    List {
        /// Jurisdiction code, e.g. US-TX.
        jurisdiction: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approves a pending change as a second principal (not its proposer; of its jurisdiction,
    /// in a role its rule names). It takes effect at once.
    Approve {
        /// Jurisdiction code, e.g. US-TX.
        jurisdiction: String,
        /// The change's id, as `change list` or the proposing command printed it.
        change_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Withdraws a pending change (its proposer, or a principal who could approve it).
    Cancel {
        /// Jurisdiction code, e.g. US-TX.
        jurisdiction: String,
        /// The change's id.
        change_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: ChangeCommand) -> anyhow::Result<()> {
    match command {
        ChangeCommand::List {
            jurisdiction,
            client,
        } => {
            let conn = client.connect(REQUEST_TIMEOUT).await?;
            let changes = conn
                .admin()
                .list_pending_changes(pb::ListPendingChangesRequest { jurisdiction })
                .await
                .map_err(rpc_error)?
                .into_inner()
                .changes;
            if changes.is_empty() {
                println!("no pending changes");
            }
            for change in &changes {
                print_change(change);
            }
        }
        ChangeCommand::Approve {
            jurisdiction,
            change_id,
            client,
        } => {
            settle(
                client,
                pb::ChangeRequest {
                    jurisdiction,
                    change_id,
                },
                true,
            )
            .await?
        }
        ChangeCommand::Cancel {
            jurisdiction,
            change_id,
            client,
        } => {
            settle(
                client,
                pb::ChangeRequest {
                    jurisdiction,
                    change_id,
                },
                false,
            )
            .await?
        }
    }
    Ok(())
}

/// Approves (`approve`) or withdraws a pending change, and prints it as it stands afterwards.
async fn settle(
    client: ClientArgs,
    request: pb::ChangeRequest,
    approve: bool,
) -> anyhow::Result<()> {
    let conn = client.connect(REQUEST_TIMEOUT).await?;
    let mut admin = conn.admin();
    let answer = if approve {
        admin.approve_change(request).await
    } else {
        admin.cancel_change(request).await
    };
    let change = answer
        .map_err(rpc_error)?
        .into_inner()
        .change
        .unwrap_or_default();
    print_change(&change);
    Ok(())
}

/// One line per change: id, state, kind, who proposed it, when it takes effect without an
/// approval, who may approve it, and what it does.
pub fn print_change(change: &pb::PendingChange) {
    println!(
        "{}  {}  {}  by {}  effective without approval: {}  approvers: {}  {}",
        change.change_id,
        label::<pb::ChangeState>(change.state),
        change.kind,
        change.proposer,
        rfc3339_or_dash(change.effective_at.as_ref()),
        change.approver_roles.join(","),
        change.summary
    );
}
