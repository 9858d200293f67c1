//! callvault's pure domain: jurisdictions, retention policies, deadlines, the privilege decision,
//! canonical phone numbers, the transitions of a call's life, and the versioned encodings of the
//! records the metadata store keeps.
//!
//! Nothing here does I/O, reads a clock, draws a random number, or is async: every decision is a
//! plain function of its inputs, so the Raft state machine reaches the same answer on every
//! replica, and each rule is property-tested without a cluster.

#![warn(missing_docs)]

pub mod approval;
pub mod call;
pub mod clock;
pub mod codec;
pub mod ingest;
pub mod jurisdiction;
pub mod phone;
pub mod policy;
pub mod privilege;
pub mod records;
pub mod retention;
pub mod time;
pub mod tombstone;

pub use call::{CallEvent, CallId, CallRecord, CallStatus, Hold, Lifecycle, PurgeReason};
pub use codec::{DecodeError, VersionedRecord};
pub use jurisdiction::Jurisdiction;
pub use phone::{E164, PhoneError, normalize};
pub use policy::{PolicySet, PrivilegedRetention, RetentionPolicy, VersionedPolicy};
pub use privilege::{IngestDecision, NumberStanding, PrivilegeKind, RegistryEntry};
pub use time::UnixMillis;
