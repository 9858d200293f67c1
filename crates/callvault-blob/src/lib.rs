//! callvault's content-addressed blob shards: encrypted chunks named by blake3, replicated,
//! scrubbed and collected. Not built yet.
