//! Gathers concurrent proposals into batch entries on the leader, so many calls share one Raft
//! entry, one fsync'd append and one apply. A few batches are in flight at once; while they
//! commit, new proposals queue and form the next batch, so batches grow with load and a lone
//! proposal waits for nobody.

use std::sync::Arc;
use std::time::Instant;

use crate::member::MetaMember;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::apply_trace::{ApplyTimes, record_apply_span};
use crate::command::{Command, CommandResult, MAX_BATCH};
use crate::types::{LogId, NodeId, Raft};

/// Most encoded bytes in one batch entry, keeping append RPCs well under the message bound.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Batches in flight at once.
const IN_FLIGHT: usize = 4;
/// Proposals waiting for a batch; beyond this, proposers wait (backpressure).
const QUEUE: usize = 8192;

/// Where a proposal went.
#[derive(Debug, Clone)]
pub enum ProposeError {
    /// This node is not the leader; the caller forwards.
    Forward(ForwardToLeader<NodeId, MetaMember>),
    /// Raft refused or stopped.
    Failed(String),
}

/// A committed proposal: the entry that carried it and its own result.
pub type Committed = (LogId, CommandResult);

type Reply = oneshot::Sender<Result<Committed, ProposeError>>;

/// One queued proposal.
struct Proposal {
    command: Command,
    /// Its encoded size.
    size: usize,
    reply: Reply,
    /// The proposal's `meta.propose` span: the apply is recorded under it.
    span: tracing::Span,
    /// When it arrived, for the commit latency.
    queued: Instant,
}

/// The handle proposers use; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Proposal>,
}

impl Proposer {
    /// Starts the batching task for `raft`, whose state machine notes its apply times in
    /// `apply_times` (for the apply spans of traced proposals).
    pub fn start(raft: Raft, apply_times: Arc<ApplyTimes>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(batch_loop(raft, receiver, apply_times));
        Proposer { queue }
    }

    /// Proposes one command, whose encoding is `encoded_len` bytes (the caller received it
    /// encoded), and waits until it applied.
    pub async fn propose(
        &self,
        command: Command,
        encoded_len: usize,
    ) -> Result<Committed, ProposeError> {
        let span = tracing::info_span!(
            "meta.propose",
            otel.kind = "internal",
            command = command.kind(),
            raft.term = tracing::field::Empty,
            raft.index = tracing::field::Empty,
            meta.batch.size = tracing::field::Empty,
        );
        let (reply, answer) = oneshot::channel();
        let proposal = Proposal {
            command,
            size: encoded_len,
            reply,
            span: span.clone(),
            queued: Instant::now(),
        };
        async {
            self.queue
                .send(proposal)
                .await
                .map_err(|_| ProposeError::Failed("the proposer stopped".into()))?;
            answer
                .await
                .map_err(|_| ProposeError::Failed("the proposer stopped".into()))?
        }
        .instrument(span)
        .await
    }
}

async fn batch_loop(
    raft: Raft,
    mut receiver: mpsc::Receiver<Proposal>,
    apply_times: Arc<ApplyTimes>,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Proposal> = None;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(item) => item,
            None => match receiver.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(item) if bytes + item.size > MAX_BATCH_BYTES => {
                    carried = Some(item);
                    break;
                }
                Ok(item) => {
                    bytes += item.size;
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let apply_times = apply_times.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut commands = Vec::with_capacity(batch.len());
            let mut waiting = Vec::with_capacity(batch.len());
            for proposal in batch {
                commands.push(proposal.command);
                waiting.push((proposal.reply, proposal.span, proposal.queued));
            }
            let batch_size = commands.len();
            let single = batch_size == 1;
            let command = if single {
                commands.into_iter().next().expect("one command")
            } else {
                Command::Batch(commands)
            };
            match raft.client_write(command).await {
                Ok(response) => {
                    // Applied on the leader; no proposer has its answer yet.
                    crate::failpoint!("apply-before-ack");
                    let results = match response.data {
                        CommandResult::Batch(results) if !single => results,
                        result => vec![result],
                    };
                    let (term, index) = (response.log_id.leader_id.term, response.log_id.index);
                    for ((reply, span, queued), result) in waiting.into_iter().zip(results) {
                        crate::metrics::commit_latency(queued.elapsed());
                        span.record("raft.term", term);
                        span.record("raft.index", index);
                        span.record("meta.batch.size", batch_size);
                        record_apply_span(&span, &apply_times, term, index, batch_size);
                        let _ = reply.send(Ok((response.log_id, result)));
                    }
                }
                Err(error) => {
                    let error = match error {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                            ProposeError::Forward(f)
                        }
                        other => ProposeError::Failed(other.to_string()),
                    };
                    for (reply, _, _) in waiting {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}
