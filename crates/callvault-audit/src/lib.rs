//! callvault's tamper-evident audit log: an RFC 6962 Merkle tree with signed checkpoints and
//! proofs. Not built yet.
