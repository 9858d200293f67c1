//! The clients: several concurrent processes, each choosing operations from its own seeded
//! generator and sending them through the public API to a node it picks, recording every
//! invocation and completion in the history.
//!
//! Texas calls (a year's retention) feed the linearizability checks: commits, holds, releases,
//! registrations of the numbers they dial, status reads and playbacks. California calls are made
//! to fall due during the run (a one-day policy, calls that started almost a day ago), for the
//! deadline checks. A call whose ingest had an unknown outcome is sent again later, with the same
//! content, as a platform would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use callvault_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::cluster::Clients;
use crate::history::{History, Kind, Op, Out};

/// The long-retention jurisdiction of the linearizability checks.
pub const TX: &str = "US-TX";
/// The jurisdiction whose calls fall due during the run.
pub const CA: &str = "US-CA";
/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// California's sweep interval in the suite's policy.
pub const CA_SWEEP_SECONDS: u32 = 2;
/// Audio bytes per chunk.
const CHUNK_BYTES: usize = 4096;
/// Numbers Texas calls dial; registrations pick from the first [`PRIVILEGED_POOL`].
const NUMBERS: u32 = 40;
const PRIVILEGED_POOL: u32 = 12;

/// The dialed number `i` (already in E.164, so the registry lists it as sent).
pub fn number(i: u32) -> String {
    format!("+1512555{:04}", 100 + i)
}

/// One call the workload streams.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub jurisdiction: &'static str,
    pub id: String,
    pub number: String,
    pub chunks: u32,
    /// Unix seconds.
    pub started_at: i64,
}

impl CallSpec {
    /// The call's audio, chunk by chunk: pseudo-random bytes derived from its id, so no two
    /// calls share a 32-byte window and the disk scan can look for each.
    pub fn audio(&self) -> Vec<Vec<u8>> {
        let mut reader = blake3::Hasher::new()
            .update(b"callvault-chaos audio")
            .update(self.id.as_bytes())
            .finalize_xof();
        (0..self.chunks)
            .map(|_| {
                let mut chunk = vec![0u8; CHUNK_BYTES];
                reader.fill(&mut chunk);
                chunk
            })
            .collect()
    }

    /// Hex BLAKE3 of the whole audio.
    pub fn digest(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for chunk in self.audio() {
            hasher.update(&chunk);
        }
        hasher.finalize().to_hex().to_string()
    }

    fn op(&self, retry: bool) -> Op {
        Op::Ingest {
            jurisdiction: self.jurisdiction.into(),
            call: self.id.clone(),
            number: self.number.clone(),
            digest: self.digest(),
            started_at: self.started_at,
            retry,
        }
    }

    fn messages(&self) -> Vec<pb::RecordCallRequest> {
        use pb::record_call_request::Part;
        let audio = self.audio();
        let ts = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
        let mut hasher = blake3::Hasher::new();
        for chunk in &audio {
            hasher.update(chunk);
        }
        let mut out = vec![pb::RecordCallRequest {
            part: Some(Part::Start(pb::CallStart {
                call_id: self.id.clone(),
                jurisdiction: self.jurisdiction.into(),
                facility_id: "fac-chaos".into(),
                inmate_id: "inm-chaos".into(),
                dialed_number: self.number.clone(),
                direction: pb::CallDirection::Outbound as i32,
                started_at: Some(ts(self.started_at)),
                recording_notice_accepted: true,
            })),
        }];
        out.extend(
            audio
                .iter()
                .enumerate()
                .map(|(seq, data)| pb::RecordCallRequest {
                    part: Some(Part::Chunk(pb::AudioChunk {
                        seq: seq as u32,
                        data: data.clone(),
                    })),
                }),
        );
        out.push(pb::RecordCallRequest {
            part: Some(Part::End(pb::CallEnd {
                ended_at: Some(ts(self.started_at + 30)),
                byte_length: (audio.len() * CHUNK_BYTES) as u64,
                plaintext_blake3: hasher.finalize().as_bytes().to_vec(),
            })),
        });
        out
    }
}

/// What the clients learned so far, to aim later operations at real calls and holds.
#[derive(Default)]
pub struct Known {
    /// Every call streamed (whatever the answer), by jurisdiction.
    pub calls: Vec<CallSpec>,
    /// Calls whose ingest had an unknown outcome, waiting for a retry.
    pub unknown: Vec<CallSpec>,
    /// Holds placed and not yet released: jurisdiction, call, hold id.
    pub holds: Vec<(&'static str, String, String)>,
    /// The Texas policy version last seen.
    pub policy_version: u32,
}

/// Whether an error status certainly means the request took no effect: it never reached a
/// server, or the server refused it for a reason that leaves no state behind.
fn definite(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            let message = status.message().to_lowercase();
            message.contains("tcp connect error") || message.contains("connection refused")
        }
        Code::Internal => false,
        _ => true,
    }
}

fn error(status: &tonic::Status) -> Out {
    Out::Error {
        code: format!("{:?}", status.code()),
        message: status.message().chars().take(300).collect(),
    }
}

/// The workload of one run.
#[derive(Clone)]
pub struct Workload {
    clients: Clients,
    history: History,
    pub known: Arc<Mutex<Known>>,
    seed: u64,
}

impl Workload {
    pub fn new(clients: Clients, history: History, seed: u64) -> Self {
        Workload {
            clients,
            history,
            known: Arc::default(),
            seed,
        }
    }

    /// Runs client `process` until `stop` turns true.
    pub async fn run(&self, process: u32, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (u64::from(process) << 32));
        let mut n = 0u32;
        while !*stop.borrow() {
            n += 1;
            let node = rng.random_range(1..=self.clients.size());
            let op = self.choose(&mut rng, process, n);
            tokio::select! {
                _ = self.execute(process, node, op) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            let pause = Duration::from_millis(rng.random_range(0..100));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    }

    fn new_call(
        &self,
        rng: &mut StdRng,
        process: u32,
        n: u32,
        jurisdiction: &'static str,
    ) -> CallSpec {
        let now = crate::history::wall_ms() / 1000;
        let started_at = if jurisdiction == CA {
            // Due 5 to 60 seconds from now under California's one-day policy.
            now - DAY + rng.random_range(5..60)
        } else {
            now - rng.random_range(60..3600)
        };
        CallSpec {
            jurisdiction,
            id: format!("{}-{:x}-p{process}-{n}", &jurisdiction[3..], self.seed),
            number: number(rng.random_range(0..NUMBERS)),
            chunks: rng.random_range(1..=3),
            started_at,
        }
    }

    fn choose(&self, rng: &mut StdRng, process: u32, n: u32) -> Op {
        let mut known = self.known.lock().expect("known lock");
        let roll = rng.random_range(0..100);
        match roll {
            0..30 => {
                let call = self.new_call(rng, process, n, TX);
                known.calls.push(call.clone());
                call.op(false)
            }
            30..38 => {
                let call = self.new_call(rng, process, n, CA);
                known.calls.push(call.clone());
                call.op(false)
            }
            38..42 if !known.unknown.is_empty() => {
                let at = rng.random_range(0..known.unknown.len());
                known.unknown.swap_remove(at).op(true)
            }
            42..45 => Op::Register {
                jurisdiction: TX.into(),
                number: number(rng.random_range(0..PRIVILEGED_POOL)),
            },
            45..54 => on_a_call(rng, &known, 0.7, |jurisdiction, call| Op::PlaceHold {
                jurisdiction,
                call,
            }),
            54..60 if !known.holds.is_empty() => {
                let at = rng.random_range(0..known.holds.len());
                let (j, call, hold) = known.holds.swap_remove(at);
                Op::ReleaseHold {
                    jurisdiction: j.into(),
                    call,
                    hold,
                }
            }
            60..64 => Op::GetPolicy {
                jurisdiction: TX.into(),
            },
            64..68 => Op::PutPolicy {
                jurisdiction: TX.into(),
                // Usually the version last seen; sometimes a stale one, to see refusals.
                expected: if rng.random_bool(0.8) {
                    known.policy_version.max(1)
                } else {
                    known.policy_version.saturating_sub(1).max(1)
                },
            },
            68..71 => Op::ListRegistry {
                jurisdiction: TX.into(),
            },
            71..88 => on_a_call(rng, &known, 0.6, |jurisdiction, call| Op::Status {
                jurisdiction,
                call,
            }),
            _ => on_a_call(rng, &known, 0.6, |jurisdiction, call| Op::Playback {
                jurisdiction,
                call,
            }),
        }
    }

    /// Streams one Texas call to a number no one has dialed yet (`fresh` picks it, outside
    /// every pool), then registers that number privileged: a purge of one recording, which
    /// every meta node's shredder must take off its disks at once (a forced round). Both
    /// operations go into the history like any other; whether the purge took one recording.
    pub async fn purge_a_fresh_number(&self, process: u32, node: usize, fresh: u32) -> bool {
        let call = CallSpec {
            jurisdiction: TX,
            id: format!("TX-{:x}-purge-{fresh}", self.seed),
            number: number(NUMBERS + 1000 + fresh % 8000),
            chunks: 1,
            started_at: crate::history::wall_ms() / 1000 - 600,
        };
        self.known
            .lock()
            .expect("known lock")
            .calls
            .push(call.clone());
        let (kind, _) = self.execute(process, node, call.op(false)).await;
        if kind != Kind::Ok {
            return false;
        }
        let register = Op::Register {
            jurisdiction: TX.into(),
            number: call.number.clone(),
        };
        matches!(
            self.execute(process, node, register).await,
            (Kind::Ok, Out::Registered { purged }) if purged > 0
        )
    }

    /// Runs `op` against `node`, records it, and returns how it completed.
    pub async fn execute(&self, process: u32, node: usize, op: Op) -> (Kind, Out) {
        let id = self.history.invoke(process, node, &op);
        let answer = tokio::time::timeout(
            crate::cluster::REQUEST_TIMEOUT + Duration::from_secs(5),
            self.send(node, &op),
        )
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("the harness gave up")));
        let (kind, out) = match answer {
            Ok(out) => (Kind::Ok, out),
            Err(status) if !op.is_write() || definite(&status) => (Kind::Fail, error(&status)),
            Err(status) => (Kind::Info, error(&status)),
        };
        self.learn(&op, kind, &out);
        self.history
            .complete(id, process, node, &op, kind, out.clone());
        (kind, out)
    }

    fn learn(&self, op: &Op, kind: Kind, out: &Out) {
        let mut known = self.known.lock().expect("known lock");
        match (op, kind, out) {
            (Op::Ingest { call, .. }, Kind::Info, _) => {
                if let Some(spec) = known.calls.iter().find(|c| c.id == *call).cloned() {
                    known.unknown.push(spec);
                }
            }
            (Op::PlaceHold { jurisdiction, call }, Kind::Ok, Out::HoldPlaced { hold }) => {
                let j = if jurisdiction == TX { TX } else { CA };
                known.holds.push((j, call.clone(), hold.clone()));
            }
            (Op::GetPolicy { .. } | Op::PutPolicy { .. }, Kind::Ok, Out::Policy { version }) => {
                known.policy_version = known.policy_version.max(*version);
            }
            _ => {}
        }
    }

    async fn send(&self, node: usize, op: &Op) -> Result<Out, tonic::Status> {
        let c = &self.clients;
        let admin = |who: &str| pb::admin_client::AdminClient::new(c.as_principal(node, who));
        let agency = |j: &str| if j == TX { "agency-tx" } else { "agency-ca" };
        match op.clone() {
            Op::Ingest { call, .. } => {
                let spec = self.spec(&call).expect("ingested calls are known");
                let mut ingest =
                    pb::ingest_client::IngestClient::new(c.as_principal(node, "platform"));
                let answer = ingest
                    .record_call(tokio_stream::iter(spec.messages()))
                    .await?
                    .into_inner();
                Ok(match pb::Decision::try_from(answer.decision) {
                    Ok(pb::Decision::Recorded) => {
                        let receipt = answer.receipt.unwrap_or_default();
                        Out::Recorded {
                            term: receipt.raft_term,
                            index: receipt.raft_index,
                        }
                    }
                    Ok(pb::Decision::NotRecordedPrivileged) => Out::NotRecorded {
                        at_ingest: !answer.reason.contains("while the call streamed"),
                    },
                    _ => Out::Rejected,
                })
            }
            Op::Register {
                jurisdiction,
                number,
            } => {
                let answer = admin("registry")
                    .register_privileged_number(pb::RegisterPrivilegedNumberRequest {
                        jurisdiction,
                        number,
                        kind: pb::PrivilegeKind::Attorney as i32,
                        evidence: "chaos bar 0001".into(),
                    })
                    .await?
                    .into_inner();
                Ok(Out::Registered {
                    purged: answer.calls_purged,
                })
            }
            Op::PlaceHold { jurisdiction, call } => {
                let answer = admin(agency(&jurisdiction))
                    .place_hold(pb::PlaceHoldRequest {
                        jurisdiction,
                        call_id: call,
                        case_number: "CHAOS-1".into(),
                        reason: "fault suite".into(),
                        review_date: None,
                    })
                    .await?
                    .into_inner();
                Ok(Out::HoldPlaced {
                    hold: answer.hold_id,
                })
            }
            Op::ReleaseHold {
                jurisdiction,
                call,
                hold,
            } => {
                admin(agency(&jurisdiction))
                    .release_hold(pb::ReleaseHoldRequest {
                        jurisdiction,
                        call_id: call,
                        hold_id: hold,
                    })
                    .await?;
                Ok(Out::Released)
            }
            Op::GetPolicy { jurisdiction } => {
                let answer = admin("operator")
                    .get_policy(pb::GetPolicyRequest {
                        jurisdiction,
                        version: 0,
                    })
                    .await?
                    .into_inner();
                Ok(Out::Policy {
                    version: answer.policy.map(|p| p.version).unwrap_or_default(),
                })
            }
            Op::PutPolicy {
                jurisdiction,
                expected,
            } => {
                let policy = crate::setup::tx_policy(expected);
                let answer = admin("operator")
                    .put_policy(pb::PutPolicyRequest {
                        jurisdiction,
                        policy: Some(policy),
                        expected_version: expected,
                    })
                    .await?
                    .into_inner();
                Ok(Out::Policy {
                    version: answer.version,
                })
            }
            Op::Status { jurisdiction, call } => {
                let mut query =
                    pb::query_client::QueryClient::new(c.as_principal(node, agency(&jurisdiction)));
                let answer = query
                    .call_status(pb::CallStatusRequest {
                        call_id: call,
                        jurisdiction,
                    })
                    .await?
                    .into_inner();
                let state = pb::CallState::try_from(answer.state)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("CALL_STATE_")
                            .to_lowercase()
                    })
                    .unwrap_or_else(|_| "unknown".into());
                Ok(Out::Status {
                    state,
                    holds: answer.holds,
                })
            }
            Op::Playback { jurisdiction, call } => {
                let content = pb::content_client::ContentClient::new(
                    c.as_principal(node, agency(&jurisdiction)),
                );
                play(content, jurisdiction, call).await
            }
            Op::ListRegistry { jurisdiction } => {
                let mut numbers = Vec::new();
                let mut token = String::new();
                loop {
                    let page = admin("registry")
                        .list_privileged_numbers(pb::ListPrivilegedNumbersRequest {
                            jurisdiction: jurisdiction.clone(),
                            page_size: 1000,
                            page_token: token.clone(),
                        })
                        .await?
                        .into_inner();
                    numbers.extend(page.numbers.into_iter().map(|n| n.normalized_number));
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    token = page.next_page_token;
                }
                Ok(Out::Registry { numbers })
            }
        }
    }

    /// The spec of a call the workload streamed.
    pub fn spec(&self, id: &str) -> Option<CallSpec> {
        let known = self.known.lock().expect("known lock");
        known.calls.iter().find(|c| c.id == id).cloned()
    }
}

/// `op` on a call streamed before, Texan with probability `texas`, else Californian; a policy
/// read while there is none yet.
fn on_a_call(
    rng: &mut StdRng,
    known: &Known,
    texas: f64,
    op: impl FnOnce(String, String) -> Op,
) -> Op {
    let j = if rng.random_bool(texas) { TX } else { CA };
    let calls: Vec<&CallSpec> = known.calls.iter().filter(|c| c.jurisdiction == j).collect();
    if calls.is_empty() {
        return Op::GetPolicy {
            jurisdiction: TX.into(),
        };
    }
    let call = calls[rng.random_range(0..calls.len())];
    op(j.into(), call.id.clone())
}

/// Plays back a call; the audio's digest.
async fn play(
    mut content: pb::content_client::ContentClient<callvault_proto::auth::AuthChannel>,
    jurisdiction: String,
    call: String,
) -> Result<Out, tonic::Status> {
    let mut stream = content
        .playback(pb::PlaybackRequest {
            jurisdiction,
            call_id: call,
            case_number: "CHAOS-1".into(),
            reason: "fault suite".into(),
        })
        .await?
        .into_inner();
    let mut hasher = blake3::Hasher::new();
    let mut length = None;
    let mut received = 0u64;
    while let Some(message) = stream.message().await? {
        match message.part {
            Some(pb::playback_response::Part::Header(h)) => length = Some(h.byte_length),
            Some(pb::playback_response::Part::Audio(bytes)) => {
                received += bytes.len() as u64;
                hasher.update(&bytes);
            }
            None => {}
        }
    }
    if length != Some(received) {
        return Err(tonic::Status::data_loss(format!(
            "playback header said {length:?} bytes, {received} arrived"
        )));
    }
    Ok(Out::Audio {
        digest: hasher.finalize().to_hex().to_string(),
    })
}
