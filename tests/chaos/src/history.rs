//! The history of a run: every operation's invocation and completion, one JSON object a line,
//! written as they happen (a crashed harness leaves a readable prefix) and kept in memory for
//! the checkers.
//!
//! A completion is `ok` (the operation took effect, or the read saw what `out` says), `fail`
//! (it certainly took no effect) or `info` (unknown: it may have taken effect, at any time after
//! its invocation; the checkers treat it as possibly committed).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// `Ingest.RecordCall` of a new call (or a retry of one with the same content).
    Ingest {
        jurisdiction: String,
        call: String,
        number: String,
        /// Hex BLAKE3 of the plaintext audio.
        digest: String,
        /// Unix seconds.
        started_at: i64,
        /// Whether this is a platform's retry of an earlier attempt.
        retry: bool,
    },
    /// `Admin.RegisterPrivilegedNumber`.
    Register {
        jurisdiction: String,
        number: String,
    },
    /// `Admin.PlaceHold`.
    PlaceHold { jurisdiction: String, call: String },
    /// `Admin.ReleaseHold`.
    ReleaseHold {
        jurisdiction: String,
        call: String,
        hold: String,
    },
    /// `Admin.GetPolicy` of the version in force.
    GetPolicy { jurisdiction: String },
    /// `Admin.PutPolicy` expecting `expected` in force.
    PutPolicy { jurisdiction: String, expected: u32 },
    /// `Query.CallStatus`.
    Status { jurisdiction: String, call: String },
    /// `Content.Playback`.
    Playback { jurisdiction: String, call: String },
    /// `Admin.ListPrivilegedNumbers` (every page).
    ListRegistry { jurisdiction: String },
}

impl Op {
    /// Whether the operation changes state (an unknown outcome then matters).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Ingest { .. }
                | Op::Register { .. }
                | Op::PlaceHold { .. }
                | Op::ReleaseHold { .. }
                | Op::PutPolicy { .. }
        )
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Ingest { .. } => "ingest",
            Op::Register { .. } => "register",
            Op::PlaceHold { .. } => "hold",
            Op::ReleaseHold { .. } => "release",
            Op::GetPolicy { .. } => "get-policy",
            Op::PutPolicy { .. } => "put-policy",
            Op::Status { .. } => "status",
            Op::Playback { .. } => "playback",
            Op::ListRegistry { .. } => "list-registry",
        }
    }
}

/// What the cluster answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Out {
    /// Ingest: recorded, committed at this position.
    Recorded { term: u64, index: u64 },
    /// Ingest: privileged; `at_ingest` false when the number was registered while it streamed
    /// (the commit turned into a purge).
    NotRecorded { at_ingest: bool },
    /// Ingest: refused (no recording notice).
    Rejected,
    /// Register: done, purging this many recordings.
    Registered { purged: u64 },
    /// PlaceHold: the new hold's id.
    HoldPlaced { hold: String },
    /// ReleaseHold: done.
    Released,
    /// GetPolicy / PutPolicy: the version in force afterwards.
    Policy { version: u32 },
    /// Status: the call's state (`stored`, `held`, `expired`, `purged`, `blocked`) and holds.
    Status { state: String, holds: u32 },
    /// Playback: the audio's hex BLAKE3.
    Audio { digest: String },
    /// ListRegistry: the normalized numbers.
    Registry { numbers: Vec<String> },
    /// An error status (gRPC code name and message).
    Error { code: String, message: String },
}

impl Out {
    /// The gRPC code name of an error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            Out::Error { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Whether a completion is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One line of the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// The operation's id (invocation and completion share it).
    pub id: u64,
    /// The client that ran it.
    pub process: u32,
    pub kind: Kind,
    /// Nanoseconds since the run started (the harness's monotonic clock).
    pub t: u64,
    /// Wall-clock Unix milliseconds (the harness's), for deadline checks.
    pub wall_ms: i64,
    /// The node the request went to.
    pub node: usize,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<Out>,
}

/// One operation with its completion, as the checkers see it.
#[derive(Debug, Clone)]
pub struct Completed {
    pub id: u64,
    pub process: u32,
    pub node: usize,
    pub op: Op,
    /// Invocation, nanoseconds since start.
    pub call: u64,
    /// Completion; `None` for an unknown outcome (it may take effect any time after `call`).
    pub ret: Option<u64>,
    pub call_wall_ms: i64,
    pub ret_wall_ms: i64,
    pub kind: Kind,
    pub out: Option<Out>,
}

/// The recorder clients share.
#[derive(Clone)]
pub struct History {
    inner: Arc<Mutex<Recorder>>,
    started: Instant,
}

struct Recorder {
    file: std::io::BufWriter<std::fs::File>,
    events: Vec<Event>,
    next_id: u64,
}

/// Wall-clock Unix milliseconds.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl History {
    /// A history written to `path`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        Ok(History {
            inner: Arc::new(Mutex::new(Recorder {
                file: std::io::BufWriter::new(std::fs::File::create(path)?),
                events: Vec::new(),
                next_id: 0,
            })),
            started: Instant::now(),
        })
    }

    fn record(&self, event: Event) {
        let mut recorder = self.inner.lock().expect("history lock");
        let line = serde_json::to_string(&event).expect("events serialize");
        let _ = writeln!(recorder.file, "{line}");
        recorder.events.push(event);
    }

    /// Records an invocation; returns its id.
    pub fn invoke(&self, process: u32, node: usize, op: &Op) -> u64 {
        let id = {
            let mut recorder = self.inner.lock().expect("history lock");
            recorder.next_id += 1;
            recorder.next_id
        };
        self.record(Event {
            id,
            process,
            kind: Kind::Invoke,
            t: self.started.elapsed().as_nanos() as u64,
            wall_ms: wall_ms(),
            node,
            op: op.clone(),
            out: None,
        });
        id
    }

    /// Records the completion of `id`.
    pub fn complete(&self, id: u64, process: u32, node: usize, op: &Op, kind: Kind, out: Out) {
        self.record(Event {
            id,
            process,
            kind,
            t: self.started.elapsed().as_nanos() as u64,
            wall_ms: wall_ms(),
            node,
            op: op.clone(),
            out: Some(out),
        });
    }

    /// Nanoseconds since the history started (the `t` of events recorded now).
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Writes acknowledged (completed `ok`) that were invoked at or after `since`.
    pub fn acked_writes_since(&self, since: u64) -> usize {
        let recorder = self.inner.lock().expect("history lock");
        let invoked: std::collections::HashSet<u64> = recorder
            .events
            .iter()
            .filter(|e| e.kind == Kind::Invoke && e.t >= since && e.op.is_write())
            .map(|e| e.id)
            .collect();
        recorder
            .events
            .iter()
            .filter(|e| e.kind == Kind::Ok && invoked.contains(&e.id))
            .count()
    }

    /// Flushes the file.
    pub fn flush(&self) {
        let _ = self.inner.lock().expect("history lock").file.flush();
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.inner.lock().expect("history lock").events.clone()
    }
}

/// Reads a history file.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// Pairs invocations with completions. An invocation without one (the run ended first) is an
/// unknown outcome.
pub fn complete(events: &[Event]) -> Vec<Completed> {
    let mut open: std::collections::HashMap<u64, &Event> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for event in events {
        match event.kind {
            Kind::Invoke => {
                open.insert(event.id, event);
            }
            kind => {
                let Some(invoke) = open.remove(&event.id) else {
                    continue;
                };
                out.push(Completed {
                    id: event.id,
                    process: event.process,
                    node: event.node,
                    op: invoke.op.clone(),
                    call: invoke.t,
                    ret: (kind != Kind::Info).then_some(event.t),
                    call_wall_ms: invoke.wall_ms,
                    ret_wall_ms: event.wall_ms,
                    kind,
                    out: event.out.clone(),
                });
            }
        }
    }
    for invoke in open.into_values() {
        out.push(Completed {
            id: invoke.id,
            process: invoke.process,
            node: invoke.node,
            op: invoke.op.clone(),
            call: invoke.t,
            ret: None,
            call_wall_ms: invoke.wall_ms,
            ret_wall_ms: i64::MAX,
            kind: Kind::Info,
            out: None,
        });
    }
    out.sort_by_key(|c| c.call);
    out
}
