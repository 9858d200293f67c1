//! Gathers concurrent proposals into batch entries on the leader, so many calls share one Raft
//! entry, one fsync'd append and one apply. A few batches are in flight at once; while they
//! commit, new proposals queue and form the next batch, so batches grow with load and a lone
//! proposal waits for nobody.

use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

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
    Forward(ForwardToLeader<NodeId, BasicNode>),
    /// Raft refused or stopped.
    Failed(String),
}

/// A committed proposal: the entry that carried it and its own result.
pub type Committed = (LogId, CommandResult);

type Reply = oneshot::Sender<Result<Committed, ProposeError>>;

/// The handle proposers use; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<(Command, usize, Reply)>,
}

impl Proposer {
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(batch_loop(raft, receiver));
        Proposer { queue }
    }

    /// Proposes one command, whose encoding is `encoded_len` bytes (the caller received it
    /// encoded), and waits until it applied.
    pub async fn propose(
        &self,
        command: Command,
        encoded_len: usize,
    ) -> Result<Committed, ProposeError> {
        let size = encoded_len;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((command, size, reply))
            .await
            .map_err(|_| ProposeError::Failed("the proposer stopped".into()))?;
        answer
            .await
            .map_err(|_| ProposeError::Failed("the proposer stopped".into()))?
    }
}

async fn batch_loop(raft: Raft, mut receiver: mpsc::Receiver<(Command, usize, Reply)>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<(Command, usize, Reply)> = None;
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
        let mut bytes = first.1;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(item) if bytes + item.1 > MAX_BATCH_BYTES => {
                    carried = Some(item);
                    break;
                }
                Ok(item) => {
                    bytes += item.1;
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (commands, replies): (Vec<Command>, Vec<Reply>) =
                batch.into_iter().map(|(c, _, r)| (c, r)).unzip();
            let single = commands.len() == 1;
            let command = if single {
                commands.into_iter().next().expect("one command")
            } else {
                Command::Batch(commands)
            };
            match raft.client_write(command).await {
                Ok(response) => {
                    let results = match response.data {
                        CommandResult::Batch(results) if !single => results,
                        result => vec![result],
                    };
                    for (reply, result) in replies.into_iter().zip(results) {
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
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}
