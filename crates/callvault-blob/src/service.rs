//! The `BlobShard` gRPC service over a [`ChunkStore`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use callvault_core::UnixMillis;
use callvault_proto::v1::blob_shard_server::BlobShard;
use callvault_proto::v1::{
    CollectRequest, CollectResponse, GetChunkRequest, GetChunkResponse, HasChunksRequest,
    HasChunksResponse, ListOrphanCandidatesRequest, ListOrphanCandidatesResponse, MarkDeadRequest,
    MarkDeadResponse, PutChunkRequest, PutChunkResponse, RemoveOrphansRequest,
    RemoveOrphansResponse, ShardStatus, ShardStatusRequest, put_chunk_request::Part,
};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::chunk::{ChunkId, MAX_CHUNK_BYTES, MAX_IDS_PER_REQUEST};
use crate::client::PIECE_BYTES;
use crate::scrub::ScrubCounters;
use crate::store::{ChunkStore, PutOutcome, ShredMode, StoreError};

/// The current time, for stamps the store keeps.
pub(crate) fn now() -> UnixMillis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// Serves one shard's store.
pub struct BlobShardService<S> {
    store: Arc<S>,
    scrub: Arc<ScrubCounters>,
    min_grace: Duration,
    min_orphan_age: Duration,
}

impl<S: ChunkStore> BlobShardService<S> {
    /// A service over `store`, reporting `scrub`'s counters. `Collect` requests with a grace
    /// shorter than `min_grace`, and orphan removals of chunks younger than `min_orphan_age`,
    /// are refused.
    pub fn new(
        store: Arc<S>,
        scrub: Arc<ScrubCounters>,
        min_grace: Duration,
        min_orphan_age: Duration,
    ) -> Self {
        BlobShardService {
            store,
            scrub,
            min_grace,
            min_orphan_age,
        }
    }

    /// The cutoff of an orphan request: chunks stored at or before it are old enough. Ages under
    /// the shard's floor are refused; the shard's own clock measures age, so no other node's
    /// clock can make a young chunk look old.
    fn orphan_cutoff(&self, min_age_seconds: u64) -> Result<UnixMillis, Status> {
        let min_age = Duration::from_secs(min_age_seconds);
        if min_age < self.min_orphan_age {
            return Err(Status::invalid_argument(format!(
                "min_age_seconds {min_age_seconds} is below this shard's floor of {}s",
                self.min_orphan_age.as_secs()
            )));
        }
        let age_ms = i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
        Ok(UnixMillis(now().0.saturating_sub(age_ms)))
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&S) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(format!("store task failed: {e}")))?
            .map_err(to_status)
    }
}

/// Maps store errors to the status a caller can act on.
fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidChunk { .. } => Status::invalid_argument(e.to_string()),
        StoreError::Corrupt { .. } => Status::data_loss(e.to_string()),
        StoreError::Collected { .. } | StoreError::Shredded { .. } => {
            Status::failed_precondition(e.to_string())
        }
        StoreError::Open { .. } | StoreError::Io(_) => Status::internal(e.to_string()),
    }
}

fn parse_id(bytes: &[u8], field: &str) -> Result<ChunkId, Status> {
    ChunkId::from_slice(bytes).ok_or_else(|| {
        Status::invalid_argument(format!(
            "{field} must be a 32-byte blake3 hash, got {} bytes",
            bytes.len()
        ))
    })
}

fn parse_ids(ids: &[Vec<u8>]) -> Result<Vec<ChunkId>, Status> {
    if ids.len() > MAX_IDS_PER_REQUEST {
        return Err(Status::invalid_argument(format!(
            "{} chunk ids in one request; at most {MAX_IDS_PER_REQUEST}",
            ids.len()
        )));
    }
    ids.iter()
        .enumerate()
        .map(|(i, id)| parse_id(id, &format!("chunk_ids[{i}]")))
        .collect()
}

type GetStream = Pin<Box<dyn Stream<Item = Result<GetChunkResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<S: ChunkStore> BlobShard for BlobShardService<S> {
    async fn put_chunk(
        &self,
        request: Request<Streaming<PutChunkRequest>>,
    ) -> Result<Response<PutChunkResponse>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(PutChunkRequest {
                part: Some(Part::Header(h)),
            }) => h,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "PutChunk: the first message must be the header",
                ));
            }
            None => return Err(Status::invalid_argument("PutChunk: empty stream")),
        };
        let id = parse_id(&header.chunk_id, "header.chunk_id")?;
        if header.length > MAX_CHUNK_BYTES as u64 {
            return Err(Status::invalid_argument(format!(
                "chunk {id}: length {} exceeds the {MAX_CHUNK_BYTES}-byte limit",
                header.length
            )));
        }
        let length = header.length as usize;
        let mut bytes = Vec::with_capacity(length);
        while let Some(message) = stream.message().await? {
            match message.part {
                Some(Part::Data(piece)) => {
                    if bytes.len() + piece.len() > length {
                        return Err(Status::invalid_argument(format!(
                            "chunk {id}: more data than the {length} bytes the header announced"
                        )));
                    }
                    bytes.extend_from_slice(&piece);
                }
                Some(Part::Header(_)) => {
                    return Err(Status::invalid_argument(format!(
                        "chunk {id}: a second header in one PutChunk stream"
                    )));
                }
                None => return Err(Status::invalid_argument("PutChunk: a message with no part")),
            }
        }
        if bytes.len() != length {
            return Err(Status::invalid_argument(format!(
                "chunk {id}: stream ended after {} of the {length} bytes the header announced",
                bytes.len()
            )));
        }
        if !id.matches(&bytes) {
            return Err(Status::invalid_argument(format!(
                "chunk {id}: blake3 of the bytes is not the chunk id"
            )));
        }
        let outcome = self
            .blocking(move |store| store.put(id, &bytes, now()))
            .await?;
        crate::metrics::chunk_written(
            match outcome {
                PutOutcome::AlreadyPresent => "already_present",
                PutOutcome::Repaired => "repaired",
                PutOutcome::Stored => "stored",
            },
            length as u64,
        );
        if outcome == PutOutcome::Repaired {
            tracing::info!(%id, "a corrupt or missing local copy was replaced");
        }
        Ok(Response::new(PutChunkResponse {
            already_present: outcome == PutOutcome::AlreadyPresent,
        }))
    }

    type GetChunkStream = GetStream;

    async fn get_chunk(
        &self,
        request: Request<GetChunkRequest>,
    ) -> Result<Response<Self::GetChunkStream>, Status> {
        let id = parse_id(&request.get_ref().chunk_id, "chunk_id")?;
        let bytes = self
            .blocking(move |store| store.get(id))
            .await?
            .ok_or_else(|| Status::not_found(format!("chunk {id} is not on this shard")))?;
        // The empty chunk is sent as one empty piece, so every reply has at least one message.
        let pieces: Vec<Result<GetChunkResponse, Status>> = if bytes.is_empty() {
            vec![Ok(GetChunkResponse { data: Vec::new() })]
        } else {
            bytes
                .chunks(PIECE_BYTES)
                .map(|p| Ok(GetChunkResponse { data: p.to_vec() }))
                .collect()
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(pieces))))
    }

    async fn has_chunks(
        &self,
        request: Request<HasChunksRequest>,
    ) -> Result<Response<HasChunksResponse>, Status> {
        let ids = parse_ids(&request.get_ref().chunk_ids)?;
        let (present, shredded) = self
            .blocking(move |store| Ok((store.has(&ids)?, store.shredded(&ids)?)))
            .await?;
        Ok(Response::new(HasChunksResponse { present, shredded }))
    }

    async fn mark_dead(
        &self,
        request: Request<MarkDeadRequest>,
    ) -> Result<Response<MarkDeadResponse>, Status> {
        let ids = parse_ids(&request.get_ref().chunk_ids)?;
        let marked = self
            .blocking(move |store| store.mark_dead(&ids, now()))
            .await?;
        Ok(Response::new(MarkDeadResponse { marked }))
    }

    async fn shred(
        &self,
        request: Request<callvault_proto::v1::ShredRequest>,
    ) -> Result<Response<callvault_proto::v1::ShredResponse>, Status> {
        let ids = parse_ids(&request.get_ref().chunk_ids)?;
        let mode = if request.get_ref().deferred {
            ShredMode::Deferred
        } else {
            ShredMode::RewriteFiles
        };
        let removed = self
            .blocking(move |store| store.shred(&ids, now(), mode))
            .await?;
        if removed > 0 {
            tracing::info!(removed, ?mode, "shredded chunks of crypto-shredded calls");
        }
        Ok(Response::new(callvault_proto::v1::ShredResponse {
            removed,
        }))
    }

    async fn list_orphan_candidates(
        &self,
        request: Request<ListOrphanCandidatesRequest>,
    ) -> Result<Response<ListOrphanCandidatesResponse>, Status> {
        let r = request.into_inner();
        let cutoff = self.orphan_cutoff(r.min_age_seconds)?;
        let after = match r.after.as_slice() {
            [] => None,
            bytes => Some(parse_id(bytes, "after")?),
        };
        let limit = (r.limit as usize).clamp(1, MAX_IDS_PER_REQUEST);
        // Bounded work per request however few of the examined chunks are old.
        let scan = limit.saturating_mul(4);
        let page = self
            .blocking(move |store| store.orphan_candidates(after, cutoff, limit, scan))
            .await?;
        Ok(Response::new(ListOrphanCandidatesResponse {
            chunk_ids: page.ids.iter().map(|id| id.as_bytes().to_vec()).collect(),
            resume_after: page
                .resume_after
                .map(|id| id.as_bytes().to_vec())
                .unwrap_or_default(),
        }))
    }

    async fn remove_orphans(
        &self,
        request: Request<RemoveOrphansRequest>,
    ) -> Result<Response<RemoveOrphansResponse>, Status> {
        let r = request.into_inner();
        let cutoff = self.orphan_cutoff(r.min_age_seconds)?;
        let ids = parse_ids(&r.chunk_ids)?;
        let (removed, bytes_removed) = self
            .blocking(move |store| store.remove_orphans(&ids, cutoff))
            .await?;
        if removed > 0 {
            tracing::info!(
                removed,
                bytes_removed,
                "removed orphan chunks no committed call references"
            );
            crate::metrics::orphans_removed(removed, bytes_removed);
        }
        Ok(Response::new(RemoveOrphansResponse {
            removed,
            bytes_removed,
        }))
    }

    async fn collect(
        &self,
        request: Request<CollectRequest>,
    ) -> Result<Response<CollectResponse>, Status> {
        let grace = Duration::from_secs(request.get_ref().grace_seconds);
        if grace < self.min_grace {
            return Err(Status::invalid_argument(format!(
                "grace of {}s is shorter than this shard's minimum of {}s",
                grace.as_secs(),
                self.min_grace.as_secs()
            )));
        }
        let removed = self
            .blocking(move |store| {
                let now = now();
                let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
                store.collect(UnixMillis(now.0.saturating_sub(grace_ms)), now)
            })
            .await?;
        if !removed.is_empty() {
            tracing::info!(removed = removed.len(), "collected dead chunks");
        }
        Ok(Response::new(CollectResponse {
            removed: removed.len() as u64,
        }))
    }

    async fn status(
        &self,
        _request: Request<ShardStatusRequest>,
    ) -> Result<Response<ShardStatus>, Status> {
        let stats = self.store.stats();
        let scrub = self.scrub.snapshot();
        Ok(Response::new(ShardStatus {
            chunks: stats.chunks,
            bytes: stats.bytes,
            marked_dead: stats.marked_dead,
            scrub_checked: scrub.checked,
            scrub_corrupt: scrub.corrupt,
            scrub_repaired: scrub.repaired,
            scrub_last_pass_unix: scrub.last_pass_unix,
            durable_puts: stats.durable_puts,
            log_syncs: stats.log_syncs,
        }))
    }
}
