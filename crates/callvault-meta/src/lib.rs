//! callvault's Raft-replicated metadata store: openraft (storage v2) on RocksDB.
//!
//! - [`log_store::LogStore`]: the Raft log, fsync'd per append batch.
//! - [`state_machine::StateMachineStore`]: calls, indexes, policies, the privileged registry,
//!   wrapped data keys and counters in column families; `apply` calls `callvault-core`'s pure
//!   decisions and writes each batch atomically with the applied log id.
//! - [`snapshot`]: snapshots as packed RocksDB checkpoints, streamed in chunks.
//! - [`network`] and [`service`]: openraft's RPCs over tonic.
//! - [`node::MetaNode`]: a running member.

// openraft's `StorageError` is large by design, and the storage traits return it; our helpers that
// feed it return it too rather than boxing and unboxing at every call.
#![allow(clippy::result_large_err)]

// The pure half: builds without RocksDB (`--no-default-features`), for the fuzz targets.
pub mod approvals;
pub mod auth_failures;
pub mod authz;
pub mod command;
pub mod convert;
pub mod custody;
pub mod failpoints;
pub mod intents;
pub mod member;
pub mod metadata;
pub mod principal;
pub mod principal_proof;
pub mod records;
pub mod retention_command;
pub mod snapshot;
pub mod types;

// The store, the services and the Raft runtime.
#[cfg(feature = "store")]
pub mod apply;
#[cfg(feature = "store")]
pub mod apply_trace;
#[cfg(feature = "store")]
pub mod audit_log;
#[cfg(feature = "store")]
pub mod audit_service;
#[cfg(feature = "store")]
pub mod client;
#[cfg(feature = "store")]
pub mod clock;
#[cfg(feature = "store")]
mod custody_service;
#[cfg(feature = "store")]
pub mod details;
#[cfg(feature = "store")]
pub mod gate;
#[cfg(feature = "store")]
pub mod keys;
#[cfg(feature = "store")]
pub mod lifecycle;
#[cfg(feature = "store")]
pub mod log_store;
#[cfg(feature = "store")]
pub mod membership;
#[cfg(feature = "store")]
pub mod metrics;
#[cfg(feature = "store")]
pub mod migrate;
#[cfg(feature = "store")]
pub mod network;
#[cfg(feature = "store")]
pub mod node;
#[cfg(feature = "store")]
pub mod proposer;
#[cfg(feature = "store")]
pub mod purge_gate;
#[cfg(feature = "store")]
pub mod purges;
#[cfg(feature = "store")]
pub mod reads;
#[cfg(feature = "store")]
pub mod retention;
#[cfg(feature = "store")]
pub mod reviews;
#[cfg(feature = "store")]
pub mod service;
#[cfg(feature = "store")]
pub mod session;
#[cfg(feature = "store")]
pub mod state_machine;
#[cfg(feature = "store")]
pub mod storage;
#[cfg(feature = "store")]
pub mod tombstones;
#[cfg(feature = "store")]
pub mod txn;

pub use command::{Command, CommandResult, CommitOutcome, Refusal};
#[cfg(feature = "store")]
pub use log_store::LogStore;
pub use member::MetaMember;
#[cfg(feature = "store")]
pub use node::{MetaConfig, MetaNode};
#[cfg(feature = "store")]
pub use state_machine::StateMachineStore;
pub use types::{NodeId, Raft, TypeConfig};
