//! The sequential specifications histories are checked against, one key at a time:
//!
//! - a jurisdiction's **registry entry** for one number: absent until registered, then present
//!   forever; ingest decisions and registry listings read it;
//! - one **call** of a jurisdiction whose recordings outlive the run: committed once, held and
//!   released by hold id, purged when its number is registered (privilege beats a hold), read
//!   by status and playback;
//! - a jurisdiction's **policy version**: a compare-and-set register (`PutPolicy` with the
//!   version the caller read).

use std::collections::BTreeSet;

use super::linear::Model;
use crate::history::{Completed, Kind, Op, Out};

/// The registry entry of one number.
pub struct RegistryEntry;

/// An operation on a registry entry.
#[derive(Debug)]
pub enum RegistryOp {
    /// Registered (`known` false: the outcome is unknown).
    Register { known: bool },
    /// Saw the number registered (`true`) or not.
    Read(bool),
}

impl Model for RegistryEntry {
    type State = bool;
    type Op = RegistryOp;
    fn init(&self) -> bool {
        false
    }
    fn step(&self, registered: &bool, op: &RegistryOp) -> Vec<bool> {
        match op {
            RegistryOp::Register { known: true } => vec![true],
            RegistryOp::Register { known: false } => vec![*registered, true],
            RegistryOp::Read(seen) => (seen == registered)
                .then_some(*registered)
                .into_iter()
                .collect(),
        }
    }
}

/// What the registry entry of `number` in `jurisdiction` saw of `c`, if anything.
pub fn registry_op(c: &Completed, jurisdiction: &str, number: &str) -> Option<RegistryOp> {
    match (&c.op, c.kind, &c.out) {
        (
            Op::Register {
                jurisdiction: j,
                number: n,
            },
            kind,
            _,
        ) if j == jurisdiction && n == number => match kind {
            Kind::Ok => Some(RegistryOp::Register { known: true }),
            Kind::Info => Some(RegistryOp::Register { known: false }),
            _ => None,
        },
        (
            Op::Ingest {
                jurisdiction: j,
                number: n,
                ..
            },
            Kind::Ok,
            Some(out),
        ) if j == jurisdiction && n == number => match out {
            Out::Recorded { .. } => Some(RegistryOp::Read(false)),
            Out::NotRecorded { .. } => Some(RegistryOp::Read(true)),
            _ => None,
        },
        (Op::ListRegistry { jurisdiction: j }, Kind::Ok, Some(Out::Registry { numbers }))
            if j == jurisdiction =>
        {
            Some(RegistryOp::Read(numbers.iter().any(|n| n == number)))
        }
        _ => None,
    }
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Life {
    Absent,
    Live,
    Purged,
    Blocked,
}

/// The state of one call, with its number's registry entry (a registration purges it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallState {
    pub registered: bool,
    pub life: Life,
    /// Holds the clients know the ids of.
    pub holds: BTreeSet<String>,
    /// Holds placed with an unknown outcome (their ids were never learned).
    pub unnamed_holds: u32,
}

/// One call whose audio has BLAKE3 `digest`.
pub struct Call {
    pub digest: String,
}

/// What an ingest of the call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOut {
    Recorded,
    /// Privileged at ingest: a blocked call-detail record.
    NotRecordedAtIngest,
    /// Registered while it streamed: the commit became a purge.
    PurgedAtCommit,
    /// FAILED_PRECONDITION: the call id was purged.
    RefusedPurged,
    /// ALREADY_EXISTS: committed before as something else.
    Exists,
    Unknown,
}

/// An operation on a call.
#[derive(Debug)]
pub enum CallOp {
    Commit(CommitOut),
    /// A registration of the call's number (`known` false: unknown outcome).
    Register {
        known: bool,
    },
    HoldPlaced(String),
    /// NOT_FOUND: the call does not exist.
    HoldRefusedNoCall,
    /// FAILED_PRECONDITION: nothing left to hold.
    HoldRefusedNotLive,
    HoldUnknown,
    Released(String),
    ReleaseRefused(String),
    ReleaseUnknown(String),
    /// A status read: state name and holds, or `None` for NOT_FOUND.
    Status(Option<(String, u32)>),
    /// A playback: the audio's digest, or `None` for NOT_FOUND.
    Playback(Option<String>),
}

impl Call {
    fn commit(&self, s: &CallState, out: &CommitOut) -> Vec<CallState> {
        let with = |life| CallState { life, ..s.clone() };
        match (out, s.life) {
            (CommitOut::Recorded, Life::Absent | Life::Live) if !s.registered => {
                vec![with(Life::Live)]
            }
            (CommitOut::NotRecordedAtIngest, Life::Absent | Life::Blocked) if s.registered => {
                vec![with(Life::Blocked)]
            }
            (CommitOut::PurgedAtCommit, Life::Absent) if s.registered => vec![with(Life::Purged)],
            (CommitOut::RefusedPurged, Life::Purged) => vec![s.clone()],
            (CommitOut::Exists, Life::Live | Life::Blocked) => vec![s.clone()],
            (CommitOut::Unknown, Life::Absent) if s.registered => {
                vec![s.clone(), with(Life::Blocked), with(Life::Purged)]
            }
            (CommitOut::Unknown, Life::Absent) => vec![s.clone(), with(Life::Live)],
            (CommitOut::Unknown, _) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    fn register(s: &CallState) -> CallState {
        let mut next = s.clone();
        next.registered = true;
        if next.life == Life::Live {
            // Privilege beats a (non-sealed) hold.
            next.life = Life::Purged;
            next.holds.clear();
            next.unnamed_holds = 0;
        }
        next
    }

    fn status(s: &CallState, seen: &Option<(String, u32)>) -> bool {
        let holds = s.holds.len() as u32 + s.unnamed_holds;
        match (seen, s.life) {
            (None, Life::Absent) => true,
            (Some((state, n)), Life::Live) => {
                *n == holds && state == if holds == 0 { "stored" } else { "held" }
            }
            (Some((state, _)), Life::Purged) => state == "purged",
            (Some((state, _)), Life::Blocked) => state == "blocked",
            _ => false,
        }
    }
}

impl Model for Call {
    type State = CallState;
    type Op = CallOp;

    fn init(&self) -> CallState {
        CallState {
            registered: false,
            life: Life::Absent,
            holds: BTreeSet::new(),
            unnamed_holds: 0,
        }
    }

    fn step(&self, s: &CallState, op: &CallOp) -> Vec<CallState> {
        let live = s.life == Life::Live;
        let only = |ok: bool| if ok { vec![s.clone()] } else { Vec::new() };
        match op {
            CallOp::Commit(out) => self.commit(s, out),
            CallOp::Register { known: true } => vec![Self::register(s)],
            CallOp::Register { known: false } => vec![s.clone(), Self::register(s)],
            CallOp::HoldPlaced(id) if live && !s.holds.contains(id) => {
                let mut next = s.clone();
                next.holds.insert(id.clone());
                vec![next]
            }
            CallOp::HoldPlaced(_) => Vec::new(),
            CallOp::HoldRefusedNoCall => only(s.life == Life::Absent),
            CallOp::HoldRefusedNotLive => only(matches!(s.life, Life::Purged | Life::Blocked)),
            CallOp::HoldUnknown if live => {
                let mut next = s.clone();
                next.unnamed_holds += 1;
                vec![s.clone(), next]
            }
            CallOp::HoldUnknown => vec![s.clone()],
            CallOp::Released(id) | CallOp::ReleaseUnknown(id) if live && s.holds.contains(id) => {
                let mut next = s.clone();
                next.holds.remove(id);
                match op {
                    CallOp::Released(_) => vec![next],
                    _ => vec![s.clone(), next],
                }
            }
            CallOp::Released(_) => Vec::new(),
            CallOp::ReleaseUnknown(_) => vec![s.clone()],
            CallOp::ReleaseRefused(id) => only(!(live && s.holds.contains(id))),
            CallOp::Status(seen) => only(Self::status(s, seen)),
            CallOp::Playback(Some(digest)) => only(live && *digest == self.digest),
            CallOp::Playback(None) => only(!live),
        }
    }
}

/// What the call `call` of `jurisdiction`, dialing `number`, saw of `c`, if anything.
pub fn call_op(c: &Completed, jurisdiction: &str, call: &str, number: &str) -> Option<CallOp> {
    let code = c.out.as_ref().and_then(Out::code);
    let on_call = |j: &str, id: &str| j == jurisdiction && id == call;
    match &c.op {
        Op::Ingest {
            jurisdiction: j,
            call: id,
            ..
        } if on_call(j, id) => {
            let out = match (c.kind, &c.out, code) {
                (Kind::Info, _, _) => CommitOut::Unknown,
                (Kind::Ok, Some(Out::Recorded { .. }), _) => CommitOut::Recorded,
                (Kind::Ok, Some(Out::NotRecorded { at_ingest: true }), _) => {
                    CommitOut::NotRecordedAtIngest
                }
                (Kind::Ok, Some(Out::NotRecorded { at_ingest: false }), _) => {
                    CommitOut::PurgedAtCommit
                }
                (Kind::Fail, _, Some("FailedPrecondition")) => CommitOut::RefusedPurged,
                (Kind::Fail, _, Some("AlreadyExists")) => CommitOut::Exists,
                _ => return None,
            };
            Some(CallOp::Commit(out))
        }
        Op::Register {
            jurisdiction: j,
            number: n,
        } if j == jurisdiction && n == number => match c.kind {
            Kind::Ok => Some(CallOp::Register { known: true }),
            Kind::Info => Some(CallOp::Register { known: false }),
            _ => None,
        },
        Op::PlaceHold {
            jurisdiction: j,
            call: id,
        } if on_call(j, id) => match (c.kind, &c.out, code) {
            (Kind::Ok, Some(Out::HoldPlaced { hold }), _) => Some(CallOp::HoldPlaced(hold.clone())),
            (Kind::Info, _, _) => Some(CallOp::HoldUnknown),
            (Kind::Fail, _, Some("NotFound")) => Some(CallOp::HoldRefusedNoCall),
            (Kind::Fail, _, Some("FailedPrecondition")) => Some(CallOp::HoldRefusedNotLive),
            _ => None,
        },
        Op::ReleaseHold {
            jurisdiction: j,
            call: id,
            hold,
        } if on_call(j, id) => match (c.kind, code) {
            (Kind::Ok, _) => Some(CallOp::Released(hold.clone())),
            (Kind::Info, _) => Some(CallOp::ReleaseUnknown(hold.clone())),
            (Kind::Fail, Some("NotFound" | "FailedPrecondition")) => {
                Some(CallOp::ReleaseRefused(hold.clone()))
            }
            _ => None,
        },
        Op::Status {
            jurisdiction: j,
            call: id,
        } if on_call(j, id) => match (c.kind, &c.out) {
            (Kind::Ok, Some(Out::Status { state, holds })) => {
                Some(CallOp::Status(Some((state.clone(), *holds))))
            }
            (Kind::Fail, _) if code == Some("NotFound") => Some(CallOp::Status(None)),
            _ => None,
        },
        Op::Playback {
            jurisdiction: j,
            call: id,
        } if on_call(j, id) => match (c.kind, &c.out) {
            (Kind::Ok, Some(Out::Audio { digest })) => Some(CallOp::Playback(Some(digest.clone()))),
            (Kind::Fail, _) if code == Some("NotFound") => Some(CallOp::Playback(None)),
            _ => None,
        },
        _ => None,
    }
}

/// A jurisdiction's policy version, a compare-and-set register starting at `initial`.
pub struct PolicyVersion {
    pub initial: u32,
}

/// An operation on the policy version.
#[derive(Debug)]
pub enum PolicyOp {
    Read(u32),
    /// A put expecting `expected`: `Some(version)` on success, `None` when ABORTED.
    Put {
        expected: u32,
        now: Option<u32>,
    },
    PutUnknown {
        expected: u32,
    },
}

impl Model for PolicyVersion {
    type State = u32;
    type Op = PolicyOp;
    fn init(&self) -> u32 {
        self.initial
    }
    fn step(&self, v: &u32, op: &PolicyOp) -> Vec<u32> {
        match *op {
            PolicyOp::Read(seen) => (seen == *v).then_some(*v).into_iter().collect(),
            PolicyOp::Put {
                expected,
                now: Some(now),
            } => (expected == *v && now == v + 1)
                .then_some(now)
                .into_iter()
                .collect(),
            PolicyOp::Put {
                expected,
                now: None,
            } => (expected != *v).then_some(*v).into_iter().collect(),
            PolicyOp::PutUnknown { expected } if expected == *v => vec![*v, v + 1],
            PolicyOp::PutUnknown { .. } => vec![*v],
        }
    }
}

/// What the policy version of `jurisdiction` saw of `c`, if anything.
pub fn policy_op(c: &Completed, jurisdiction: &str) -> Option<PolicyOp> {
    match (&c.op, c.kind, &c.out) {
        (Op::GetPolicy { jurisdiction: j }, Kind::Ok, Some(Out::Policy { version }))
            if j == jurisdiction =>
        {
            Some(PolicyOp::Read(*version))
        }
        (
            Op::PutPolicy {
                jurisdiction: j,
                expected,
            },
            kind,
            out,
        ) if j == jurisdiction => match (kind, out) {
            (Kind::Ok, Some(Out::Policy { version })) => Some(PolicyOp::Put {
                expected: *expected,
                now: Some(*version),
            }),
            (Kind::Fail, Some(Out::Error { code, .. })) if code == "Aborted" => {
                Some(PolicyOp::Put {
                    expected: *expected,
                    now: None,
                })
            }
            (Kind::Info, _) => Some(PolicyOp::PutUnknown {
                expected: *expected,
            }),
            _ => None,
        },
        _ => None,
    }
}
