//! Which role may propose which command: the second half of the internal-RPC table
//! (`callvault_proto::identity::INTERNAL_RPCS` says who may call `MetaStore.Propose` at all).
//!
//! The match is exhaustive, so a new command does not compile until someone decides who may
//! propose it. `meta` may propose everything: members forward proposals to the leader and run the
//! lifecycle work themselves. Commands that act for a person are checked again for that person's
//! proof (`crate::principal`); this table only says which workload may carry them.

use callvault_proto::identity::Role::{self, Api, Ingest, Keys, Meta};
use tonic::Status;

use crate::command::Command;
use crate::retention_command::RetentionCommand;

/// The roles that may propose `command`.
pub fn proposers(command: &Command) -> &'static [Role] {
    match command {
        Command::CommitCall { .. } => &[Meta, Ingest],
        Command::PutPolicy { .. }
        | Command::RegisterPrivileged { .. }
        | Command::RegisterSensitive { .. }
        | Command::FlagPrivileged { .. }
        | Command::PlaceHold { .. }
        | Command::ReleaseHold { .. }
        | Command::RecordAccess(_) => &[Meta, Api],
        // Every node that serves public APIs reports its failed logins.
        Command::RecordAuthFailures(_) => &[Meta, Ingest, Api, Keys],
        Command::Expire { .. } | Command::KeysShredded { .. } | Command::ChunksCollected { .. } => {
            &[Meta]
        }
        // Formed by the leader from single proposals; never proposed.
        Command::Batch(_) => &[],
        // A session's numbered proposal is checked as the command it carries.
        Command::Session(request) => proposers(&request.command),
        // Every role that proposes anything holds a session.
        Command::OpenSession => &[Meta, Ingest, Api, Keys],
        Command::Retention(command) => retention_proposers(command),
    }
}

fn retention_proposers(command: &RetentionCommand) -> &'static [Role] {
    match command {
        // Acts for a person: the api carries it.
        RetentionCommand::ProposeChange { .. }
        | RetentionCommand::ApproveChange { .. }
        | RetentionCommand::CancelChange { .. } => &[Meta, Api],
        // The meta members' own work: attestations, the sweep leader's follow-ups, removals.
        RetentionCommand::AttestTime { .. }
        | RetentionCommand::EffectChange { .. }
        | RetentionCommand::ContinuePurge { .. }
        | RetentionCommand::ExpireCallDetails { .. }
        | RetentionCommand::WaiveReceipts { .. } => &[Meta],
    }
}

/// `PERMISSION_DENIED` unless `role` may propose `command`.
pub fn check(role: Role, command: &Command) -> Result<(), Status> {
    if proposers(command).contains(&role) {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "role {role} may not propose {}",
        command.kind()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_may_propose_whatever_another_role_may() {
        let samples = [
            crate::command::tests::commit("c-1", 1, 0),
            crate::command::tests::register("(512) 555-0100", 1, 0),
            Command::Expire {
                jurisdiction: callvault_core::Jurisdiction::Tx,
                as_of: callvault_core::UnixMillis(0),
                calls: Vec::new(),
            },
        ];
        for command in &samples {
            assert!(check(Meta, command).is_ok());
        }
        assert!(check(Ingest, &samples[0]).is_ok());
        assert!(check(Api, &samples[0]).is_err());
        assert!(check(Ingest, &samples[1]).is_err());
        assert!(check(Api, &samples[2]).is_err());
        assert!(check(Role::Blob, &samples[0]).is_err());
    }
}
