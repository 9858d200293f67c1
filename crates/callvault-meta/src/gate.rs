//! The gate every proposal passes on the meta node that receives it, before it can enter the
//! log: the proposing role may propose the command (`crate::authz`), and a command that acts for
//! a person carries that person's valid proof (`crate::principal_proof`), checked against the
//! principals this node holds. A forwarded proposal passes the gate again on the leader.
//!
//! Every refused proof is worth an audit entry, but a caller must not be able to flood the log:
//! one entry a second per caller, the others counted in the next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callvault_core::UnixMillis;
use callvault_proto::identity::PeerIdentity;
use tonic::Status;

use crate::command::Command;
use crate::principal::Principals;
use crate::principal_proof::{self, Limits, PrincipalProof, ProofRefusal, acting_principal};

/// At most one refusal entry per caller in this long.
const REFUSAL_INTERVAL: Duration = Duration::from_secs(1);
/// Callers whose refusals are counted at once; beyond this the oldest are forgotten.
const MAX_CALLERS: usize = 4096;

fn now() -> UnixMillis {
    UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

/// See the module documentation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ProposalGate {
    principals: Principals,
    limits: Limits,
    /// Per caller: when its last refusal was logged, and how many since were not.
    refusals: Arc<Mutex<HashMap<String, (Instant, u64)>>>,
}

impl ProposalGate {
    /// A gate checking proofs against `principals` and charging `limits`.
    pub fn new(principals: Principals, limits: Limits) -> Self {
        ProposalGate {
            principals,
            limits,
            refusals: Arc::default(),
        }
    }

    /// Checks one signed command, its proof fresh at `now` (the cluster time: see
    /// `MetaService::proof_clock`); the command to propose.
    pub fn check(
        &self,
        proof: &PrincipalProof,
        command: &Command,
        now: UnixMillis,
    ) -> Result<Command, Status> {
        principal_proof::check(&self.principals, proof, command, self.limits, now)
    }

    /// Admits `command` from `caller`: the command to propose, or the refusal and, when it is
    /// time to log one for this caller, the command that logs it.
    pub fn admit(
        &self,
        command: Command,
        caller: Option<&PeerIdentity>,
        now: UnixMillis,
    ) -> Result<Command, (Status, Option<Command>)> {
        match command {
            // A client session carries one command: that command is checked.
            Command::Session(mut request) => {
                let inner = std::mem::replace(&mut *request.command, Command::OpenSession);
                *request.command = self.admit_one(inner, caller, now)?;
                Ok(Command::Session(request))
            }
            other => self.admit_one(other, caller, now),
        }
    }

    fn admit_one(
        &self,
        command: Command,
        caller: Option<&PeerIdentity>,
        now: UnixMillis,
    ) -> Result<Command, (Status, Option<Command>)> {
        let refuse = |status: Status, principal: &str, kind: &str| {
            let log = self.log_refusal(caller, principal, kind, status.message());
            (status, log)
        };
        match command {
            Command::Signed { proof, command } => match self.check(&proof, &command, now) {
                Ok(checked) => Ok(Command::Signed {
                    proof,
                    command: Box::new(checked),
                }),
                Err(status) => Err(refuse(status, &proof.principal, command.kind())),
            },
            other => match acting_principal(&other) {
                Some(principal) => {
                    let status = Status::unauthenticated(format!(
                        "{} acts for {principal} but carries no proof of {principal}",
                        other.kind()
                    ));
                    Err(refuse(status, principal, other.kind()))
                }
                None => Ok(other),
            },
        }
    }

    /// The command logging a refusal, unless this caller's last one was logged too recently
    /// (then it is counted for the next).
    fn log_refusal(
        &self,
        caller: Option<&PeerIdentity>,
        principal: &str,
        kind: &str,
        reason: &str,
    ) -> Option<Command> {
        let caller = caller.map_or_else(
            || "unknown".to_string(),
            |c| format!("{}:{}", c.role, c.node),
        );
        let mut refusals = self.refusals.lock().expect("not poisoned");
        if refusals.len() >= MAX_CALLERS && !refusals.contains_key(&caller) {
            let oldest = refusals
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                refusals.remove(&oldest);
            }
        }
        let now_instant = Instant::now();
        let entry = refusals
            .entry(caller.clone())
            .or_insert((now_instant - REFUSAL_INTERVAL * 2, 0));
        if now_instant.duration_since(entry.0) < REFUSAL_INTERVAL {
            entry.1 += 1;
            return None;
        }
        let suppressed = std::mem::take(&mut entry.1);
        entry.0 = now_instant;
        Some(Command::ProofRefused(ProofRefusal {
            caller: caller.chars().take(crate::command::MAX_PRINCIPAL).collect(),
            principal: principal
                .chars()
                .take(crate::command::MAX_PRINCIPAL)
                .collect(),
            kind: kind.to_string(),
            reason: reason.chars().take(200).collect(),
            suppressed,
            at: now(),
        }))
    }
}

impl Default for ProposalGate {
    fn default() -> Self {
        ProposalGate::new(Principals::default(), Limits::default())
    }
}
