//! Clients of blob shards: [`ShardClient`] talks to one shard; [`ReplicatedBlobClient`] writes a
//! chunk to its R placement targets and returns once W of them have it durable, and reads from
//! replicas in placement order, repairing missing or corrupt copies on the way.
//!
//! Channels are created once per shard and reused (tonic multiplexes requests over HTTP/2 and
//! reconnects on its own); every request has a deadline.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use callvault_proto::MAX_MESSAGE_BYTES;
use callvault_proto::auth::AuthChannel;
use callvault_proto::identity::Credential;
use callvault_proto::v1::blob_shard_client::BlobShardClient;
use callvault_proto::v1::{
    CollectRequest, GetChunkRequest, HasChunksRequest, ListOrphanCandidatesRequest,
    MarkDeadRequest, PutChunkHeader, PutChunkRequest, RemoveOrphansRequest, ShardStatus,
    ShardStatusRequest, put_chunk_request::Part,
};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tonic::{Code, Status};
use tracing::Instrument as _;

use crate::chunk::{ChunkId, MAX_CHUNK_BYTES, MAX_IDS_PER_REQUEST};
use crate::envelope::SealedChunk;
use crate::placement::{Placement, PlacementError, ShardId, ShardInfo};
use crate::store::ShredMode;

/// Bytes per `data` message of a streamed chunk: well under [`MAX_MESSAGE_BYTES`].
pub const PIECE_BYTES: usize = 1 << 20;

/// Replication and transport settings.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// Replicas per chunk (R).
    pub replicas: usize,
    /// Replicas that must have a chunk durable before a write succeeds (W).
    pub write_quorum: usize,
    /// How long to wait for a TCP + HTTP/2 connection to a shard.
    pub connect_timeout: Duration,
    /// Deadline of each request to one shard.
    pub request_timeout: Duration,
    /// The role this client acts as towards the shards (see `callvault_proto::identity`).
    pub peer: Credential,
    /// Whether a read rewrites a replica found missing or corrupt. Only roles that may write
    /// chunks (ingest, blob) can; the api reads and leaves repairs to the shards' scrubbers.
    pub read_repair: bool,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            replicas: 3,
            write_quorum: 2,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            peer: Credential::none(),
            read_repair: true,
        }
    }
}

/// One shard's failure in a replicated operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFailure {
    /// Which shard.
    pub shard: ShardId,
    /// The gRPC code it answered (or `Unavailable` when unreachable).
    pub code: Code,
    /// Its message.
    pub message: String,
}

/// A list of shard failures, displayed as `shard: code: message; …`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Failures(pub Vec<ShardFailure>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, fail) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {:?}: {}", fail.shard, fail.code, fail.message)?;
        }
        Ok(())
    }
}

/// What went wrong in a replicated operation.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// Fewer than W replicas acknowledged the write.
    #[error("chunk {id}: {acked} of the {needed} required replicas acknowledged; failed: {failed}")]
    WriteQuorum {
        /// The chunk.
        id: ChunkId,
        /// How many acknowledged.
        acked: usize,
        /// W.
        needed: usize,
        /// The shards that failed and why.
        failed: Failures,
    },
    /// No shard holds the chunk.
    #[error("chunk {id} is on no shard")]
    NotFound {
        /// The chunk.
        id: ChunkId,
    },
    /// No shard could return an intact copy.
    #[error("chunk {id}: no intact copy could be read; failed: {failed}")]
    Unreadable {
        /// The chunk.
        id: ChunkId,
        /// The shards that failed and why.
        failed: Failures,
    },
    /// The shard set or settings are unusable.
    #[error("blob client configuration: {0}")]
    Config(String),
}

impl From<PlacementError> for ReplicationError {
    fn from(e: PlacementError) -> Self {
        ReplicationError::Config(e.to_string())
    }
}

/// A client of one shard over a reused channel.
#[derive(Clone)]
pub struct ShardClient {
    info: ShardInfo,
    inner: BlobShardClient<AuthChannel>,
}

impl fmt::Debug for ShardClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardClient")
            .field("info", &self.info)
            .finish()
    }
}

impl ShardClient {
    /// A client that connects on first use (and reconnects after failures).
    pub fn connect_lazy(
        info: ShardInfo,
        config: &ReplicationConfig,
    ) -> Result<Self, ReplicationError> {
        let endpoint = callvault_proto::tls::endpoint(&info.addr)
            .map_err(|e| {
                ReplicationError::Config(format!("shard {} address {:?}: {e}", info.id, info.addr))
            })?
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .tcp_nodelay(true);
        let inner = BlobShardClient::new(config.peer.bearer().channel(endpoint.connect_lazy()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(ShardClient { info, inner })
    }

    /// The shard this client talks to.
    pub fn info(&self) -> &ShardInfo {
        &self.info
    }

    /// Stores a chunk; `Ok(true)` when the shard already had it.
    #[tracing::instrument(name = "blob.shard.put", skip_all, fields(otel.kind = "client", shard = %self.info.id, chunk = %id))]
    pub async fn put(&self, id: ChunkId, bytes: &[u8]) -> Result<bool, Status> {
        let mut messages = Vec::with_capacity(1 + bytes.len().div_ceil(PIECE_BYTES));
        messages.push(PutChunkRequest {
            part: Some(Part::Header(PutChunkHeader {
                chunk_id: id.as_bytes().to_vec(),
                length: bytes.len() as u64,
            })),
        });
        messages.extend(bytes.chunks(PIECE_BYTES).map(|piece| PutChunkRequest {
            part: Some(Part::Data(piece.to_vec())),
        }));
        let response = self
            .inner
            .clone()
            .put_chunk(tokio_stream::iter(messages))
            .await?;
        Ok(response.into_inner().already_present)
    }

    /// Reads a chunk and checks it against its id (`DATA_LOSS` if it does not match).
    pub async fn get(&self, id: ChunkId) -> Result<Vec<u8>, Status> {
        let mut stream = self
            .inner
            .clone()
            .get_chunk(GetChunkRequest {
                chunk_id: id.as_bytes().to_vec(),
            })
            .await?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(piece) = stream.message().await? {
            if bytes.len() + piece.data.len() > MAX_CHUNK_BYTES {
                return Err(Status::data_loss(format!(
                    "shard {} sent more than {MAX_CHUNK_BYTES} bytes for chunk {id}",
                    self.info.id
                )));
            }
            bytes.extend_from_slice(&piece.data);
        }
        if !id.matches(&bytes) {
            return Err(Status::data_loss(format!(
                "shard {} returned bytes that do not hash to chunk {id}",
                self.info.id
            )));
        }
        Ok(bytes)
    }

    /// Which of `ids` the shard holds, in order (any number of ids; sent in batches).
    pub async fn has(&self, ids: &[ChunkId]) -> Result<Vec<bool>, Status> {
        Ok(self
            .presence(ids)
            .await?
            .into_iter()
            .map(|(held, _)| held)
            .collect())
    }

    /// Marks chunks dead (collection stage 1); returns how many the shard reports marked.
    pub async fn mark_dead(&self, ids: &[ChunkId]) -> Result<u64, Status> {
        let mut marked = 0;
        for batch in ids.chunks(MAX_IDS_PER_REQUEST) {
            marked += self
                .inner
                .clone()
                .mark_dead(MarkDeadRequest {
                    chunk_ids: batch.iter().map(|id| id.as_bytes().to_vec()).collect(),
                })
                .await?
                .into_inner()
                .marked;
        }
        Ok(marked)
    }

    /// Removes the chunks of crypto-shredded calls now and tombstones them, so no copy can come
    /// back; with [`ShredMode::RewriteFiles`] the shard also rewrites its files before answering.
    /// Returns how many copies it held.
    pub async fn shred(&self, ids: &[ChunkId], mode: ShredMode) -> Result<u64, Status> {
        let mut removed = 0;
        for batch in ids.chunks(MAX_IDS_PER_REQUEST) {
            removed += self
                .inner
                .clone()
                .shred(callvault_proto::v1::ShredRequest {
                    chunk_ids: batch.iter().map(|id| id.as_bytes().to_vec()).collect(),
                    deferred: mode == ShredMode::Deferred,
                })
                .await?
                .into_inner()
                .removed;
        }
        Ok(removed)
    }

    /// For each of `ids`, in order: whether the shard holds it, and whether it keeps a shred
    /// tombstone for it.
    pub async fn presence(&self, ids: &[ChunkId]) -> Result<Vec<(bool, bool)>, Status> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(MAX_IDS_PER_REQUEST) {
            let response = self
                .inner
                .clone()
                .has_chunks(HasChunksRequest {
                    chunk_ids: batch.iter().map(|id| id.as_bytes().to_vec()).collect(),
                })
                .await?
                .into_inner();
            let mut shredded = response.shredded;
            if shredded.is_empty() {
                // A shard from before tombstones answers `present` only.
                shredded = vec![false; batch.len()];
            }
            if response.present.len() != batch.len() || shredded.len() != batch.len() {
                return Err(Status::internal(format!(
                    "shard {} answered {}/{} flags for {} ids",
                    self.info.id,
                    response.present.len(),
                    shredded.len(),
                    batch.len()
                )));
            }
            out.extend(response.present.into_iter().zip(shredded));
        }
        Ok(out)
    }

    /// One page of the shard's chunks stored at least `min_age` ago, after `after`; the ids and
    /// where the next page starts (`None`: the end).
    pub async fn orphan_candidates(
        &self,
        after: Option<ChunkId>,
        min_age: Duration,
        limit: u32,
    ) -> Result<(Vec<ChunkId>, Option<ChunkId>), Status> {
        let response = self
            .inner
            .clone()
            .list_orphan_candidates(ListOrphanCandidatesRequest {
                after: after.map(|id| id.as_bytes().to_vec()).unwrap_or_default(),
                min_age_seconds: min_age.as_secs(),
                limit,
            })
            .await?
            .into_inner();
        let id = |bytes: &[u8]| {
            ChunkId::from_slice(bytes).ok_or_else(|| {
                Status::internal(format!(
                    "shard {} sent a chunk id of {} bytes",
                    self.info.id,
                    bytes.len()
                ))
            })
        };
        let ids = response
            .chunk_ids
            .iter()
            .map(|b| id(b))
            .collect::<Result<Vec<_>, _>>()?;
        let resume = match response.resume_after.as_slice() {
            [] => None,
            bytes => Some(id(bytes)?),
        };
        Ok((ids, resume))
    }

    /// Removes those of `ids` the shard still holds that are at least `min_age` old and not
    /// marked; returns how many chunks and bytes went.
    pub async fn remove_orphans(
        &self,
        ids: &[ChunkId],
        min_age: Duration,
    ) -> Result<(u64, u64), Status> {
        let mut removed = (0, 0);
        for batch in ids.chunks(MAX_IDS_PER_REQUEST) {
            let r = self
                .inner
                .clone()
                .remove_orphans(RemoveOrphansRequest {
                    chunk_ids: batch.iter().map(|id| id.as_bytes().to_vec()).collect(),
                    min_age_seconds: min_age.as_secs(),
                })
                .await?
                .into_inner();
            removed.0 += r.removed;
            removed.1 += r.bytes_removed;
        }
        Ok(removed)
    }

    /// Removes chunks marked at least `grace` ago (collection stage 2); returns how many.
    pub async fn collect(&self, grace: Duration) -> Result<u64, Status> {
        Ok(self
            .inner
            .clone()
            .collect(CollectRequest {
                grace_seconds: grace.as_secs(),
            })
            .await?
            .into_inner()
            .removed)
    }

    /// The shard's counters.
    pub async fn status(&self) -> Result<ShardStatus, Status> {
        Ok(self
            .inner
            .clone()
            .status(ShardStatusRequest {})
            .await?
            .into_inner())
    }
}

/// What a replicated write achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReceipt {
    /// The shards that acknowledged before the write returned (at least W).
    pub acked: Vec<ShardId>,
    /// The shards that had failed by then; writes still in flight continue in the background.
    pub failed: Failures,
}

/// What a replicated read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The chunk, verified against its id.
    pub bytes: Vec<u8>,
    /// The shard that served it.
    pub served_by: ShardId,
    /// Replicas that lacked the chunk or held a corrupt copy and were rewritten on the way.
    pub repaired: Vec<ShardId>,
}

/// Writes and reads chunks across the shard set.
#[derive(Debug, Clone)]
pub struct ReplicatedBlobClient {
    placement: Placement,
    clients: HashMap<ShardId, ShardClient>,
    write_quorum: usize,
    read_repair: bool,
}

fn failure(shard: &ShardId, status: &Status) -> ShardFailure {
    ShardFailure {
        shard: shard.clone(),
        code: status.code(),
        message: status.message().to_string(),
    }
}

impl ReplicatedBlobClient {
    /// A client of `shards` with R and W from `config`. Connections open lazily.
    pub fn new(
        shards: Vec<ShardInfo>,
        config: &ReplicationConfig,
    ) -> Result<Self, ReplicationError> {
        if config.write_quorum == 0 || config.write_quorum > config.replicas {
            return Err(ReplicationError::Config(format!(
                "write quorum {} must be between 1 and the replica count {}",
                config.write_quorum, config.replicas
            )));
        }
        let placement = Placement::new(shards, config.replicas)?;
        let clients = placement
            .shards()
            .iter()
            .map(|s| Ok((s.id.clone(), ShardClient::connect_lazy(s.clone(), config)?)))
            .collect::<Result<_, ReplicationError>>()?;
        Ok(ReplicatedBlobClient {
            placement,
            clients,
            write_quorum: config.write_quorum,
            read_repair: config.read_repair,
        })
    }

    /// The placement this client writes by.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The client of one shard.
    pub fn shard(&self, id: &ShardId) -> Option<&ShardClient> {
        self.clients.get(id)
    }

    /// Writes a sealed chunk; see [`ReplicatedBlobClient::put`].
    pub async fn put_sealed(&self, chunk: &SealedChunk) -> Result<WriteReceipt, ReplicationError> {
        self.put(chunk.id, Arc::new(chunk.bytes.clone())).await
    }

    /// Writes `bytes` (named `id`) to its R placement targets concurrently and returns once W
    /// have it durable. Writes to the remaining targets continue in the background; a target
    /// that misses the chunk is filled in later by read repair or the scrubber.
    #[tracing::instrument(name = "blob.put", skip_all, fields(chunk = %id, write_quorum = self.write_quorum))]
    pub async fn put(
        &self,
        id: ChunkId,
        bytes: Arc<Vec<u8>>,
    ) -> Result<WriteReceipt, ReplicationError> {
        let targets = self.placement.targets(&id);
        let needed = self.write_quorum.min(targets.len());
        let mut pending: FuturesUnordered<_> = targets
            .iter()
            .map(|t| {
                let client = self.clients[&t.id].clone();
                let bytes = bytes.clone();
                // Spawned, so a write still in flight when the quorum is reached completes.
                // In the caller's span, so each replica write is part of the call's trace.
                let task =
                    tokio::spawn(async move { client.put(id, &bytes).await }.in_current_span());
                let shard = t.id.clone();
                async move {
                    let result = match task.await {
                        Ok(r) => r.map(|_| ()),
                        Err(e) => Err(Status::internal(format!("write task failed: {e}"))),
                    };
                    (shard, result)
                }
            })
            .collect();
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        while let Some((shard, result)) = pending.next().await {
            match result {
                Ok(()) => acked.push(shard),
                Err(status) => {
                    tracing::warn!(%id, %shard, code = ?status.code(), "chunk write to a replica failed: {}", status.message());
                    failed.push(failure(&shard, &status));
                }
            }
            if acked.len() >= needed {
                return Ok(WriteReceipt {
                    acked,
                    failed: Failures(failed),
                });
            }
            if targets.len() - failed.len() < needed {
                break;
            }
        }
        Err(ReplicationError::WriteQuorum {
            id,
            acked: acked.len(),
            needed,
            failed: Failures(failed),
        })
    }

    /// Reads a chunk from its replicas in placement order (then from other shards, in case the
    /// shard set changed), rewriting any replica found without the chunk or with a corrupt copy.
    pub async fn get(&self, id: ChunkId) -> Result<ReadOutcome, ReplicationError> {
        let ranked = self.placement.ranked(&id);
        let replicas = self.placement.replicas();
        let mut to_repair = Vec::new();
        let mut failed = Vec::new();
        for (rank, shard) in ranked.iter().enumerate() {
            match self.clients[&shard.id].get(id).await {
                Ok(bytes) => {
                    let repaired = if self.read_repair {
                        self.repair(id, &bytes, &to_repair).await
                    } else {
                        Vec::new()
                    };
                    return Ok(ReadOutcome {
                        bytes,
                        served_by: shard.id.clone(),
                        repaired,
                    });
                }
                Err(status) => {
                    if rank < replicas && matches!(status.code(), Code::NotFound | Code::DataLoss) {
                        to_repair.push(shard.id.clone());
                    }
                    failed.push(failure(&shard.id, &status));
                }
            }
        }
        if failed.iter().all(|f| f.code == Code::NotFound) {
            Err(ReplicationError::NotFound { id })
        } else {
            Err(ReplicationError::Unreadable {
                id,
                failed: Failures(failed),
            })
        }
    }

    /// Writes verified `bytes` to `shards`; returns those that took it.
    async fn repair(&self, id: ChunkId, bytes: &[u8], shards: &[ShardId]) -> Vec<ShardId> {
        let mut repaired = Vec::new();
        for shard in shards {
            match self.clients[shard].put(id, bytes).await {
                Ok(_) => {
                    tracing::info!(%id, %shard, "read repair rewrote a missing or corrupt replica");
                    repaired.push(shard.clone());
                }
                Err(status) => {
                    tracing::warn!(%id, %shard, "read repair failed: {}", status.message());
                }
            }
        }
        repaired
    }

    /// The placement targets of `id` that report holding it.
    pub async fn holders(&self, id: ChunkId) -> Vec<ShardId> {
        let mut holders = Vec::new();
        for shard in self.placement.targets(&id) {
            if let Ok(present) = self.clients[&shard.id].has(&[id]).await
                && present == [true]
            {
                holders.push(shard.id.clone());
            }
        }
        holders
    }
}
