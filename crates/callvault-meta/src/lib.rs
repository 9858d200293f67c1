//! callvault's Raft-replicated metadata store: openraft on RocksDB. Not built yet; the state
//! machine will call `callvault-core`'s pure transitions.
