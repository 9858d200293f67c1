//! How the stateless tiers (ingest, query, admin) reach the metadata store: typed calls over the
//! internal `MetaStore` service of any meta node, which forwards to the leader. Calls that fail
//! with `UNAVAILABLE` (an election, a restarting node) are retried on the next node, with
//! backoff, until a deadline.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use callvault_core::codec::VersionedRecord;
use callvault_core::policy::VersionedPolicy;
use callvault_core::tombstone::{CallTombstone, TombstoneOutcome};
use callvault_core::{CallId, CallRecord, Jurisdiction, RegistryEntry, UnixMillis};
use callvault_proto::MAX_MESSAGE_BYTES;
use callvault_proto::auth::AuthChannel;
use callvault_proto::identity::Credential;
use callvault_proto::v1 as pb;
use callvault_proto::v1::meta_store_client::MetaStoreClient;
use tonic::Status;
use tracing::Instrument;

use crate::apply::{Counters, LogPosition};
use crate::command::{Command, CommandResult, Refusal, SessionRequest};
use crate::reads::{CallFilter, JurisdictionStatus, Page, Standing};

/// How long a call keeps retrying through elections and restarts before it gives up.
pub const RETRY_FOR: Duration = Duration::from_secs(20);

/// What the store knows of a call id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLookup {
    /// Its record, while one is kept.
    pub call: Option<CallRecord>,
    /// What is left once the record is gone.
    pub tombstone: Option<CallTombstone>,
    /// When a shred of its content started, while its receipts are not all in.
    pub shred_started: Option<UnixMillis>,
    /// The number it dialed is registered privileged (its recording is unreadable and purged,
    /// or waiting for its page of the registration's purge).
    pub number_privileged: bool,
}

/// Where a command was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The leader's term.
    pub term: u64,
    /// The log index.
    pub index: u64,
}

/// A client of the metadata store through any of its members.
#[derive(Clone)]
pub struct MetaClient {
    members: Arc<Vec<MetaStoreClient<AuthChannel>>>,
    next: Arc<AtomicUsize>,
    session: Arc<ClientSession>,
}

/// This client's session with the metadata store, which makes its proposals exactly-once
/// however often they are retried (see [`crate::session`]).
#[derive(Default)]
struct ClientSession {
    /// The open session; held while one is being opened, so concurrent proposals share it.
    id: tokio::sync::Mutex<Option<u64>>,
    numbers: std::sync::Mutex<Numbers>,
}

/// Proposal numbers: the last one given and those still waiting for their answer.
#[derive(Default)]
struct Numbers {
    last: u64,
    in_flight: BTreeSet<u64>,
}

impl ClientSession {
    /// The next proposal's number and the number below which every answer has arrived.
    fn number(&self) -> (u64, u64) {
        let mut numbers = self.numbers.lock().expect("lock is not poisoned");
        numbers.last += 1;
        let seq = numbers.last;
        numbers.in_flight.insert(seq);
        let acked_below = *numbers.in_flight.first().expect("seq was just inserted");
        (seq, acked_below)
    }

    fn answered(&self, seq: u64) {
        self.numbers
            .lock()
            .expect("lock is not poisoned")
            .in_flight
            .remove(&seq);
    }
}

impl std::fmt::Debug for MetaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaClient")
            .field("members", &self.members.len())
            .finish()
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("metadata store sent a malformed {what}: {e}"))
}

/// A page of stored records as the metadata store sent them; an empty token ends the listing.
fn decode_page<T: VersionedRecord>(
    items: &[Vec<u8>],
    next_page_token: Vec<u8>,
    what: &str,
) -> Result<Page<T>, Status> {
    Ok(Page {
        items: items
            .iter()
            .map(|b| T::decode(b).map_err(|e| corrupt(what, e)))
            .collect::<Result<_, _>>()?,
        next_token: (!next_page_token.is_empty()).then_some(next_page_token),
    })
}

/// A jurisdiction's status from its wire form.
fn status_from_pb(r: &pb::ReadCountersResponse) -> Result<JurisdictionStatus, Status> {
    let cluster_time = r.cluster_time_ms.map(UnixMillis);
    let pending_policy = decode_policy(&r.pending_policy)?.map(|policy| {
        (
            r.pending_policy_change_id,
            policy,
            r.pending_policy_effective_at_ms.map(UnixMillis),
        )
    });
    Ok(JurisdictionStatus {
        counters: Counters {
            calls_total: r.calls_total,
            live: r.live,
            held: r.held,
            expired: r.expired,
            purged: r.purged,
            blocked_privileged: r.blocked_privileged,
            purges_pending: r.purges_pending,
            details_kept: r.details_kept,
            details_expired: r.details_expired,
        },
        policy: decode_policy(&r.policy)?,
        oldest_live_started_at: r.oldest_live_started_at_ms.map(UnixMillis),
        overdue: r.overdue,
        purges_overdue: r.purges_overdue,
        as_of: cluster_time.unwrap_or_default(),
        cluster_time,
        oldest_detail_started_at: r.oldest_detail_started_at_ms.map(UnixMillis),
        details_overdue: r.details_overdue,
        holds_past_review: r.holds_past_review,
        pending_policy,
        pending_changes: r.pending_changes,
        purges_in_progress: r.purges_in_progress,
        purges_in_progress_purged: r.purges_in_progress_purged,
    })
}

fn decode_policy(bytes: &[u8]) -> Result<Option<VersionedPolicy>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    VersionedPolicy::decode(bytes)
        .map(Some)
        .map_err(|e| corrupt("policy", e))
}

impl MetaClient {
    /// A client of the members at `addrs` (`host:port`), acting as `peer`'s role.
    pub fn new(addrs: &[String], peer: &Credential) -> Result<Self, String> {
        if addrs.is_empty() {
            return Err("no metadata-store address configured".into());
        }
        let members = addrs
            .iter()
            .map(|addr| {
                let endpoint = callvault_proto::tls::endpoint(addr)
                    .map_err(|e| format!("metadata-store address {addr:?}: {e}"))?
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(30))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5));
                Ok(
                    MetaStoreClient::new(peer.bearer().channel(endpoint.connect_lazy()))
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(MetaClient {
            members: Arc::new(members),
            next: Arc::new(AtomicUsize::new(0)),
            session: Arc::default(),
        })
    }

    /// Runs `call` against one member after another until it answers with anything but
    /// `UNAVAILABLE`, or [`RETRY_FOR`] has passed.
    async fn retrying<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut(MetaStoreClient<AuthChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.retrying_counted(call).await.1
    }

    /// [`Self::retrying`], also saying how many attempts were made.
    async fn retrying_counted<T, F, Fut>(&self, mut call: F) -> (u32, Result<T, Status>)
    where
        F: FnMut(MetaStoreClient<AuthChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let mut backoff = Duration::from_millis(50);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let at = self.next.load(Ordering::Relaxed) % self.members.len();
            match call(self.members[at].clone()).await {
                Ok(response) => return (attempts, Ok(response.into_inner())),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    if tokio::time::Instant::now() + backoff > deadline {
                        let status = Status::unavailable(format!(
                            "metadata store unavailable for {}s: {}",
                            RETRY_FOR.as_secs(),
                            status.message()
                        ));
                        return (attempts, Err(status));
                    }
                    // Another member may be up, or may know the new leader.
                    self.next.store(at + 1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(status) => return (attempts, Err(status)),
            }
        }
    }

    /// Proposes `command` and waits until it applied, exactly once however often it had to be
    /// retried: it goes as a numbered proposal of this client's session.
    #[tracing::instrument(name = "meta.client.propose", skip_all, fields(otel.kind = "client", command = command.kind()))]
    pub async fn propose(&self, command: &Command) -> Result<(Committed, CommandResult), Status> {
        if matches!(
            command,
            Command::Batch(_) | Command::Session(_) | Command::OpenSession
        ) {
            return self.propose_once(command).await.1;
        }
        let mut stale = None;
        for _ in 0..3 {
            let session = self.session_id(stale).await?;
            let (seq, acked_below) = self.session.number();
            let numbered = Command::Session(SessionRequest {
                session,
                seq,
                acked_below,
                command: Box::new(command.clone()),
            });
            let (attempts, outcome) = self.propose_once(&numbered).await;
            self.session.answered(seq);
            match outcome? {
                (_, CommandResult::Refused(Refusal::SessionUnknown)) if attempts == 1 => {
                    // Refused without being applied: safe to send again in a new session.
                    stale = Some(session);
                }
                (_, CommandResult::Refused(Refusal::SessionUnknown)) => {
                    return Err(Status::unknown(
                        "outcome unknown: the metadata store evicted this client's session \
                         while the proposal was being retried; read the state before retrying",
                    ));
                }
                answered => return Ok(answered),
            }
        }
        Err(Status::unavailable(
            "the metadata store forgot three sessions of this client in a row",
        ))
    }

    /// The open session's id, opening one if there is none or if the open one is `stale`.
    async fn session_id(&self, stale: Option<u64>) -> Result<u64, Status> {
        let mut id = self.session.id.lock().await;
        if let Some(current) = *id
            && Some(current) != stale
        {
            return Ok(current);
        }
        // Client housekeeping, not part of the request that happened to need it: a trace of its
        // own rather than an extra apply in the caller's.
        let open = tracing::info_span!(parent: None, "meta.client.open_session");
        let opened = self
            .propose_once(&Command::OpenSession)
            .instrument(open)
            .await
            .1?;
        match opened {
            (_, CommandResult::SessionOpened { session }) => {
                *id = Some(session);
                Ok(session)
            }
            (_, other) => Err(Status::internal(format!(
                "the metadata store answered a session request with {other:?}"
            ))),
        }
    }

    /// Sends one proposal, retried on `UNAVAILABLE`; says how many attempts it took.
    async fn propose_once(
        &self,
        command: &Command,
    ) -> (u32, Result<(Committed, CommandResult), Status>) {
        let bytes = command.encode();
        let (attempts, response) = self
            .retrying_counted(|mut c| {
                let command = bytes.clone();
                async move { c.propose(pb::ProposeRequest { command }).await }
            })
            .await;
        let result = response.and_then(|response| {
            let result = CommandResult::decode(&response.result)
                .map_err(|e| corrupt("command result", e))?;
            let committed = Committed {
                term: response.term,
                index: response.index,
            };
            Ok((committed, result))
        });
        (attempts, result)
    }

    /// A number's standing, and `call_id`'s existing record if given (linearizable).
    #[tracing::instrument(name = "meta.client.read_standing", skip_all, fields(otel.kind = "client"))]
    pub async fn standing(
        &self,
        jurisdiction: Jurisdiction,
        fingerprint: &[u8; 32],
        call_id: Option<&CallId>,
    ) -> Result<Standing, Status> {
        let request = pb::ReadStandingRequest {
            jurisdiction: jurisdiction.code().to_string(),
            fingerprint: fingerprint.to_vec(),
            local: false,
            call_id: call_id.map(|c| c.as_str().to_string()).unwrap_or_default(),
        };
        let r = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.read_standing(request).await }
            })
            .await?;
        let existing = if r.existing_call.is_empty() {
            None
        } else {
            let call =
                CallRecord::decode(&r.existing_call).map_err(|e| corrupt("call record", e))?;
            let position = LogPosition {
                term: r.existing_commit_term,
                index: r.existing_commit_index,
            };
            Some((call, position))
        };
        Ok(Standing {
            privileged: r.privileged,
            sensitive: r.sensitive,
            policy: decode_policy(&r.policy)?,
            existing,
            retired: r.retired,
            cluster_time: r.cluster_time_ms.map(UnixMillis),
        })
    }

    /// One call (linearizable).
    pub async fn call(
        &self,
        jurisdiction: Jurisdiction,
        call_id: &CallId,
    ) -> Result<Option<CallRecord>, Status> {
        Ok(self
            .call_with_shred(jurisdiction, call_id)
            .await?
            .map(|(call, _)| call))
    }

    /// One call and, when a shred of its content is still waiting for receipts, when that shred
    /// started (linearizable).
    pub async fn call_with_shred(
        &self,
        jurisdiction: Jurisdiction,
        call_id: &CallId,
    ) -> Result<Option<(CallRecord, Option<UnixMillis>)>, Status> {
        let found = self.lookup(jurisdiction, call_id).await?;
        Ok(found.and_then(|f| f.call.map(|call| (call, f.shred_started))))
    }

    /// Everything the store knows of a call id: its record, or the tombstone left of it, and how
    /// far a shred of its content has gone (linearizable). `None` when it knows nothing.
    pub async fn lookup(
        &self,
        jurisdiction: Jurisdiction,
        call_id: &CallId,
    ) -> Result<Option<CallLookup>, Status> {
        let request = pb::ReadCallRequest {
            jurisdiction: jurisdiction.code().to_string(),
            call_id: call_id.as_str().to_string(),
            local: false,
        };
        let r = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.read_call(request).await }
            })
            .await?;
        let call = match r.record.as_slice() {
            [] => None,
            bytes => Some(CallRecord::decode(bytes).map_err(|e| corrupt("call record", e))?),
        };
        let outcome = match r.tombstone_outcome {
            0 => None,
            1 => Some(TombstoneOutcome::Expired),
            2 => Some(TombstoneOutcome::Purged),
            3 => Some(TombstoneOutcome::Refused),
            other => return Err(corrupt("tombstone", format!("outcome {other}"))),
        };
        let tombstone = outcome.map(|outcome| CallTombstone {
            outcome,
            at: UnixMillis(r.tombstone_at_ms),
        });
        if call.is_none() && tombstone.is_none() {
            return Ok(None);
        }
        Ok(Some(CallLookup {
            call,
            tombstone,
            shred_started: r.shred_pending.then_some(UnixMillis(r.shred_started_at_ms)),
            number_privileged: r.number_privileged,
        }))
    }

    /// A live call's record, wrapped data key and chunk ids (linearizable); `None` when the call
    /// is unknown or has no readable content.
    pub async fn content(
        &self,
        jurisdiction: Jurisdiction,
        call_id: &CallId,
    ) -> Result<Option<crate::reads::LiveContent>, Status> {
        let request = pb::ReadContentRequest {
            jurisdiction: jurisdiction.code().to_string(),
            call_id: call_id.as_str().to_string(),
        };
        let r = match self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.read_content(request).await }
            })
            .await
        {
            Ok(r) => r,
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(status),
        };
        let call = CallRecord::decode(&r.record).map_err(|e| corrupt("call record", e))?;
        let chunk_ids = r
            .chunk_ids
            .iter()
            .map(|id| {
                <[u8; 32]>::try_from(id.as_slice())
                    .map_err(|_| Status::internal(format!("chunk id of {} bytes", id.len())))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(crate::reads::LiveContent {
            call,
            wrapped_key: r.wrapped_key,
            chunk_ids,
        }))
    }

    /// A policy version, 0 for the one in force (linearizable).
    pub async fn policy(
        &self,
        jurisdiction: Jurisdiction,
        version: u32,
    ) -> Result<Option<VersionedPolicy>, Status> {
        let request = pb::ReadPolicyRequest {
            jurisdiction: jurisdiction.code().to_string(),
            version,
            local: false,
        };
        let r = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.read_policy(request).await }
            })
            .await?;
        decode_policy(&r.policy)
    }

    /// A jurisdiction's status as of `as_of` (linearizable).
    pub async fn status(
        &self,
        jurisdiction: Jurisdiction,
        as_of: UnixMillis,
    ) -> Result<JurisdictionStatus, Status> {
        let request = pb::ReadCountersRequest {
            jurisdiction: jurisdiction.code().to_string(),
            local: false,
            as_of_ms: as_of.0,
        };
        let r = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.read_counters(request).await }
            })
            .await?;
        status_from_pb(&r)
    }

    /// A jurisdiction's open changes (`change_id` 0), or one change by id whatever its state
    /// (linearizable).
    pub async fn changes(
        &self,
        jurisdiction: Jurisdiction,
        change_id: u64,
    ) -> Result<Vec<crate::approvals::PendingChange>, Status> {
        let request = pb::ReadChangesRequest {
            jurisdiction: jurisdiction.code().to_string(),
            change_id,
            local: false,
        };
        let r = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.read_changes(request).await }
            })
            .await?;
        r.changes
            .iter()
            .map(|b| crate::approvals::PendingChange::decode(b).map_err(|e| corrupt("change", e)))
            .collect()
    }

    /// The cluster time and the voters' attestations (linearizable).
    pub async fn clock(&self) -> Result<crate::clock::ClockView, Status> {
        let r = self
            .retrying(
                |mut c| async move { c.read_clock(pb::ReadClockRequest { local: false }).await },
            )
            .await?;
        Ok(crate::clock::ClockView {
            cluster_time: r.cluster_time_ms.map(UnixMillis),
            voters: r.voters,
            attestations: r
                .attestations
                .iter()
                .map(|a| (a.node_id, UnixMillis(a.attested_ms)))
                .collect(),
        })
    }

    /// A page of calls, newest first (linearizable).
    pub async fn list_calls(
        &self,
        jurisdiction: Jurisdiction,
        filter: &CallFilter,
        page_size: u32,
        page_token: Vec<u8>,
    ) -> Result<Page<CallRecord>, Status> {
        let request = pb::ListCallRecordsRequest {
            jurisdiction: jurisdiction.code().to_string(),
            facility_id: filter.facility_id.clone().unwrap_or_default(),
            inmate_id: filter.inmate_id.clone().unwrap_or_default(),
            started_after_ms: filter.started_after.map(|t| t.0),
            started_before_ms: filter.started_before.map(|t| t.0),
            page_size,
            page_token,
            local: false,
        };
        let r = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.list_call_records(request).await }
            })
            .await?;
        decode_page(&r.records, r.next_page_token, "call record")
    }

    /// A page of the privileged registry (linearizable).
    pub async fn list_registry(
        &self,
        jurisdiction: Jurisdiction,
        page_size: u32,
        page_token: Vec<u8>,
    ) -> Result<Page<RegistryEntry>, Status> {
        let request = pb::ListRegistryRequest {
            jurisdiction: jurisdiction.code().to_string(),
            page_size,
            page_token,
            local: false,
        };
        let r = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.list_registry(request).await }
            })
            .await?;
        decode_page(&r.entries, r.next_page_token, "registry entry")
    }
}
