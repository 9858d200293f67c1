//! callvault's content-addressed blob shards: encrypted audio chunks named by blake3,
//! replicated, scrubbed and collected.
//!
//! Layers, each using only those above it in this list:
//! - [`chunk`]: chunk ids and size limits.
//! - [`envelope`]: per-call data keys, AES-256-GCM chunk sealing, key wrapping, key loading (no
//!   I/O beyond reading a key file).
//! - [`custody`]: the jurisdictions' key pairs, HPKE wrapping to their public keys, the
//!   [`KeyCustodian`] of the keys role, and key releases sealed to one api node.
//! - [`store`]: the [`store::ChunkStore`] trait, its conformance suite and the RocksDB store.
//! - [`placement`]: rendezvous hashing of chunks onto shards.
//! - [`client`]: [`client::ShardClient`] and [`client::ReplicatedBlobClient`] (R replicas, W quorum,
//!   read repair).
//! - [`service`]: the `BlobShard` gRPC service.
//! - [`scrub`]: the rate-limited scrubber; [`collect`]: staged deletion.
//! - [`shard`]: [`ShardConfig`] and [`serve_shard`], what the node calls.
//!
//! How ingest stores a call:
//! ```no_run
//! # async fn ingest(keys: &callvault_blob::JurisdictionPublicKeys, blobs: &callvault_blob::ReplicatedBlobClient)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use callvault_blob::CallSealer;
//! use callvault_core::{CallId, Jurisdiction};
//! let call = CallId::new("tx-huntsville-000123")?;
//! let sealer = CallSealer::new(keys, &call, Jurisdiction::Tx)?;
//! for (seq, audio) in [b"...".as_slice()].iter().enumerate() {
//!     let chunk = sealer.seal(seq as u64, audio);
//!     blobs.put_sealed(&chunk).await?; // W of R replicas durable
//!     // remember chunk.id for the call's commit
//! }
//! let _wrapped = sealer.wrapped_key(); // committed with the call in the metadata store
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod chunk;
pub mod client;
pub mod collect;
pub mod custody;
pub mod envelope;
pub mod metrics;
pub mod placement;
pub mod scrub;
pub mod service;
pub mod shard;
pub mod store;

pub use chunk::{ChunkId, MAX_CHUNK_BYTES};
pub use client::{
    ReadOutcome, ReplicatedBlobClient, ReplicationConfig, ReplicationError, WriteReceipt,
};
pub use collect::{CollectError, Collector, MarkReceipt};
pub use custody::{
    JurisdictionKeyPairs, JurisdictionPublicKeys, LocalCustodian, ReleaseKeyPair, seal_release,
};
pub use envelope::{
    CallOpener, CallSealer, DataKey, EnvelopeError, KeyCustodian, KeyEncryptionKey, KeyRing,
    SealedChunk, WrapDataKey, WrappedDataKey,
};
pub use placement::{Placement, ShardId, ShardInfo};
pub use scrub::{ScrubCounters, ScrubSnapshot, Scrubber};
pub use shard::{ServeError, Shard, ShardConfig, serve_shard, serve_shard_on};
pub use store::{ChunkStore, RocksChunkStore, ShredMode, StoreError};
