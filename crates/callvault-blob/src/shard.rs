//! A blob shard as the node runs it: [`ShardConfig`], [`Shard`] and [`serve_shard`].
//!
//! `callvault serve --roles blob` deserializes a [`ShardConfig`] (e.g. from the `[blob]` table of
//! its config file) and calls [`serve_shard`] with its shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use callvault_proto::MAX_MESSAGE_BYTES;
use callvault_proto::v1::blob_shard_server::BlobShardServer;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::client::{ReplicatedBlobClient, ReplicationConfig};
use crate::placement::{ShardId, ShardInfo};
use crate::scrub::{ScrubCounters, Scrubber};
use crate::service::BlobShardService;
use crate::store::{RocksChunkStore, StoreError, StoreOptions};
use callvault_proto::identity::{Credential, InternalGateLayer, PeerTable};

/// One blob shard's settings. Every field but `shard_id` and `data_dir` has a default.
///
/// ```toml
/// shard_id = "blob-1"
/// data_dir = "/var/lib/callvault/blob"
/// listen_addr = "0.0.0.0:7400"
/// replicas = 3
/// scrub_bytes_per_second = 67108864
/// scrub_interval_seconds = 86400
/// collect_min_grace_seconds = 86400
/// orphan_min_age_seconds = 86400
/// shards = [
///   { id = "blob-1", addr = "10.0.0.1:7400" },
///   { id = "blob-2", addr = "10.0.0.2:7400" },
///   { id = "blob-3", addr = "10.0.0.3:7400" },
/// ]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// This shard's id in the shard set; placement hashes it, so it must never change.
    pub shard_id: ShardId,
    /// Where the RocksDB store lives. Created if absent or empty; a non-empty directory that is
    /// not a chunk store, or a damaged store, is an error.
    pub data_dir: PathBuf,
    /// Address the `BlobShard` gRPC service listens on (default `127.0.0.1:7400`).
    #[serde(default = "defaults::listen_addr")]
    pub listen_addr: SocketAddr,
    /// The whole shard set, this shard included, as the placement sees it. Empty: the shard
    /// serves and scrubs its own chunks but cannot repair from peers.
    #[serde(default)]
    pub shards: Vec<ShardInfo>,
    /// Replicas per chunk (R, default 3): the scrubber restores copies on the R placement
    /// targets.
    #[serde(default = "defaults::replicas")]
    pub replicas: usize,
    /// Scrubber read rate in bytes per second (default 64 MiB/s; 0 = unlimited).
    #[serde(default = "defaults::scrub_rate")]
    pub scrub_bytes_per_second: u64,
    /// Seconds between the end of one scrub pass and the start of the next (default one day;
    /// 0 = no background scrubbing).
    #[serde(default = "defaults::scrub_interval")]
    pub scrub_interval_seconds: u64,
    /// The shortest grace a `Collect` request may ask for (default one day): stage 2 never
    /// removes a chunk marked more recently than this.
    #[serde(default = "defaults::grace")]
    pub collect_min_grace_seconds: u64,
    /// The youngest chunk an orphan sweep may remove, in seconds of this shard's clock (default
    /// one day). Must exceed the longest a call may stream, or a call still streaming could lose
    /// its chunks.
    #[serde(default = "defaults::grace")]
    pub orphan_min_age_seconds: u64,
    /// Connect timeout to peer shards, in milliseconds (default 2000).
    #[serde(default = "defaults::connect_timeout_ms")]
    pub peer_connect_timeout_ms: u64,
    /// Deadline of each request to a peer shard, in milliseconds (default 30000).
    #[serde(default = "defaults::request_timeout_ms")]
    pub peer_request_timeout_ms: u64,
    /// Who may call the shard: the roles' tokens (the node passes them; TLS client certificates
    /// are checked by the transport). Never read from the shard's own config.
    #[serde(skip, default = "PeerTable::open")]
    pub peers: PeerTable,
    /// How the shard's scrubber authenticates to its peers (role `blob`).
    #[serde(skip)]
    pub peer: Credential,
}

mod defaults {
    use std::net::SocketAddr;
    pub fn listen_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7400))
    }
    pub fn replicas() -> usize {
        3
    }
    pub fn scrub_rate() -> u64 {
        64 << 20
    }
    pub fn scrub_interval() -> u64 {
        86_400
    }
    pub fn grace() -> u64 {
        86_400
    }
    pub fn connect_timeout_ms() -> u64 {
        2_000
    }
    pub fn request_timeout_ms() -> u64 {
        30_000
    }
}

impl ShardConfig {
    /// A config with defaults for everything but the id and the directory.
    pub fn new(shard_id: ShardId, data_dir: PathBuf) -> Self {
        ShardConfig {
            shard_id,
            data_dir,
            listen_addr: defaults::listen_addr(),
            shards: Vec::new(),
            replicas: defaults::replicas(),
            scrub_bytes_per_second: defaults::scrub_rate(),
            scrub_interval_seconds: defaults::scrub_interval(),
            collect_min_grace_seconds: defaults::grace(),
            orphan_min_age_seconds: defaults::grace(),
            peer_connect_timeout_ms: defaults::connect_timeout_ms(),
            peer_request_timeout_ms: defaults::request_timeout_ms(),
            peers: PeerTable::open(),
            peer: Credential::none(),
        }
    }

    fn replication(&self) -> ReplicationConfig {
        ReplicationConfig {
            replicas: self.replicas,
            write_quorum: 1,
            connect_timeout: Duration::from_millis(self.peer_connect_timeout_ms),
            request_timeout: Duration::from_millis(self.peer_request_timeout_ms),
            peer: self.peer.clone(),
            read_repair: true,
        }
    }
}

/// Why a shard could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is inconsistent.
    #[error("blob shard configuration: {0}")]
    Config(String),
    /// The store could not be opened or closed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("blob shard gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// An opened shard, ready to serve.
pub struct Shard {
    config: ShardConfig,
    store: Arc<RocksChunkStore>,
    counters: Arc<ScrubCounters>,
    peers: Option<Arc<ReplicatedBlobClient>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("shard_id", &self.config.shard_id)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// Checks the config and opens the store (blocking: call from `spawn_blocking` in async
    /// code, or use [`serve_shard`]).
    pub fn open(config: ShardConfig) -> Result<Self, ServeError> {
        let peers = if config.shards.is_empty() {
            None
        } else {
            if !config.shards.iter().any(|s| s.id == config.shard_id) {
                return Err(ServeError::Config(format!(
                    "shard {} is not in its own shard set",
                    config.shard_id
                )));
            }
            let client = ReplicatedBlobClient::new(config.shards.clone(), &config.replication())
                .map_err(|e| ServeError::Config(e.to_string()))?;
            Some(Arc::new(client))
        };
        let store = RocksChunkStore::open(&config.data_dir, &StoreOptions::default())?;
        tracing::info!(shard = %config.shard_id, dir = %config.data_dir.display(), stats = ?store_stats(&store), "blob store opened");
        Ok(Shard {
            config,
            store: Arc::new(store),
            counters: Arc::default(),
            peers,
        })
    }

    /// The store (for tests and tools; holding it past `serve` delays shutdown).
    pub fn store(&self) -> &Arc<RocksChunkStore> {
        &self.store
    }

    /// The scrubber's counters, for metrics export.
    pub fn scrub_counters(&self) -> Arc<ScrubCounters> {
        self.counters.clone()
    }

    /// A scrubber of this shard, sharing its counters (for on-demand passes).
    pub fn scrubber(&self) -> Scrubber<RocksChunkStore> {
        Scrubber::new(
            self.store.clone(),
            self.config.shard_id.clone(),
            self.peers.clone(),
            self.config.scrub_bytes_per_second,
            self.counters.clone(),
        )
    }

    /// Serves `BlobShard` on `listener` until `shutdown` completes, scrubbing in the background.
    /// On shutdown: stops accepting, lets in-flight requests finish, stops the scrubber, flushes
    /// the store and closes it, so the directory can be reopened at once.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let scrub_task = (self.config.scrub_interval_seconds > 0).then(|| {
            tokio::spawn(self.scrubber().run(
                Duration::from_secs(self.config.scrub_interval_seconds),
                stop_rx,
            ))
        });
        let service = BlobShardService::new(
            self.store.clone(),
            self.counters.clone(),
            Duration::from_secs(self.config.collect_min_grace_seconds),
            Duration::from_secs(self.config.orphan_min_age_seconds),
        );
        let server = BlobShardServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        tracing::info!(shard = %self.config.shard_id, addr = ?listener.local_addr().ok(), "blob shard serving");
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = callvault_proto::tls::server_config() {
            builder = builder
                .tls_config(tls)
                .map_err(|e| ServeError::Config(format!("tls: {e}")))?;
        }
        let served = builder
            .layer(InternalGateLayer::new(self.config.peers.clone()))
            .tcp_nodelay(true)
            // A span per request, a child of the trace context the writer sent (when tracing is on).
            .trace_fn(callvault_proto::trace_context::server_span)
            .add_service(server)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        let _ = stop_tx.send(true);
        if let Some(task) = scrub_task {
            let _ = task.await;
        }
        let closed = close_store(self.store).await;
        served?;
        closed
    }
}

fn store_stats(store: &RocksChunkStore) -> crate::store::StoreStats {
    crate::store::ChunkStore::stats(store)
}

/// Flushes and closes the store once every other holder (in-flight blocking tasks) let go.
async fn close_store(store: Arc<RocksChunkStore>) -> Result<(), ServeError> {
    let mut store = store;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match Arc::try_unwrap(store) {
            Ok(owned) => {
                return tokio::task::spawn_blocking(move || {
                    let flushed = owned.flush();
                    drop(owned); // closes RocksDB and releases its lock
                    flushed
                })
                .await
                .map_err(|e| ServeError::Config(format!("closing the store: {e}")))?
                .map_err(ServeError::Store);
            }
            Err(shared) => {
                if tokio::time::Instant::now() >= deadline {
                    let _ = shared.flush();
                    return Err(ServeError::Config(
                        "the chunk store is still in use 30s after shutdown; flushed but not closed"
                            .into(),
                    ));
                }
                store = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Opens the store in `config.data_dir`, binds `config.listen_addr` and serves until
/// `shutdown` completes. The entry point of `callvault serve --roles blob`.
pub async fn serve_shard(
    config: ShardConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let addr = config.listen_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_shard_on(config, listener, shutdown).await
}

/// [`serve_shard`] on a listener the caller bound (e.g. an ephemeral port in tests).
pub async fn serve_shard_on(
    config: ShardConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let shard = tokio::task::spawn_blocking(move || Shard::open(config))
        .await
        .map_err(|e| ServeError::Config(format!("opening the shard: {e}")))??;
    shard.serve(listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_strictness() {
        let config: ShardConfig = toml::from_str(
            r#"
            shard_id = "blob-1"
            data_dir = "/tmp/x"
            shards = [{ id = "blob-1", addr = "127.0.0.1:7400" }]
            "#,
        )
        .unwrap();
        assert_eq!(config.replicas, 3);
        assert_eq!(config.listen_addr.port(), 7400);
        assert_eq!(config.collect_min_grace_seconds, 86_400);
        assert_eq!(config.orphan_min_age_seconds, 86_400);
        assert_eq!(config.shards.len(), 1);
        let unknown =
            toml::from_str::<ShardConfig>("shard_id = \"a\"\ndata_dir = \"/x\"\nreplica = 2\n");
        assert!(unknown.unwrap_err().to_string().contains("replica"));
        assert!(toml::from_str::<ShardConfig>("shard_id = \"a b\"\ndata_dir = \"/x\"\n").is_err());
    }

    #[test]
    fn a_shard_missing_from_its_own_set_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ShardConfig::new(ShardId::new("blob-9").unwrap(), dir.path().join("d"));
        config.shards = vec![ShardInfo {
            id: ShardId::new("blob-1").unwrap(),
            addr: "127.0.0.1:1".into(),
        }];
        assert!(matches!(Shard::open(config), Err(ServeError::Config(_))));
    }
}
