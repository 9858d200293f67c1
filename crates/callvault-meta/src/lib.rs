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

pub mod apply;
pub mod apply_trace;
pub mod approvals;
pub mod audit_log;
pub mod audit_service;
pub mod auth_failures;
pub mod authz;
pub mod client;
pub mod clock;
pub mod command;
pub mod convert;
pub mod details;
pub mod intents;
pub mod keys;
pub mod lifecycle;
pub mod log_store;
pub mod member;
pub mod membership;
pub mod metrics;
pub mod migrate;
pub mod network;
pub mod node;
pub mod principal;
pub mod proposer;
pub mod purges;
pub mod reads;
pub mod retention;
pub mod retention_command;
pub mod reviews;
pub mod service;
pub mod session;
pub mod snapshot;
pub mod state_machine;
pub mod storage;
pub mod tombstones;
pub mod txn;
pub mod types;

pub use command::{Command, CommandResult, CommitOutcome, Refusal};
pub use log_store::LogStore;
pub use member::MetaMember;
pub use node::{MetaConfig, MetaNode};
pub use state_machine::StateMachineStore;
pub use types::{NodeId, Raft, TypeConfig};
