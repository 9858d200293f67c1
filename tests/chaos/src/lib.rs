//! The callvault fault suite (issue 15): three to five real `callvault serve` processes, each in
//! a network namespace of its own, a mixed workload from several clients through the public API,
//! and a nemesis that partitions, kills, pauses, wipes, skews clocks, fills disks, changes the
//! membership and crashes nodes at failpoints, on a schedule drawn from a seed. Every operation
//! is recorded; after healing, the histories are checked for linearizability per key and the
//! cluster for the invariants of `ARCHITECTURE.md`.
//!
//! It needs root (namespaces, nftables, tmpfs mounts) and runs through `scripts/chaos`.

pub mod check;
pub mod cluster;
pub mod history;
pub mod monitor;
pub mod nemesis;
pub mod net;
pub mod node;
pub mod report;
pub mod run;
pub mod setup;
pub mod workload;
