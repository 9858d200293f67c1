//! Chunk identity: a chunk is named by the blake3 hash of its (encrypted) bytes.

use std::fmt;

/// Largest chunk a shard accepts, in bytes. Audio chunks are at most 1 MiB of plaintext; 4 MiB
/// leaves room for other producers while keeping every chunk within one gRPC message budget.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Most chunk ids one `HasChunks` or `MarkDead` request may carry.
pub const MAX_IDS_PER_REQUEST: usize = 10_000;

/// The 32-byte blake3 hash of a chunk's bytes, which is also its name on every shard.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    /// The id of `bytes`: their blake3 hash.
    pub fn of(bytes: &[u8]) -> Self {
        ChunkId(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        ChunkId(bytes)
    }

    /// Parses the wire form; `None` unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(ChunkId)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `bytes` hash to this id. blake3's comparison is constant-time, although chunk
    /// ids are not secret.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        blake3::hash(bytes) == blake3::Hash::from_bytes(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", hex::encode(&self.0[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_blake3_and_matches_only_its_bytes() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.as_bytes(), blake3::hash(b"hello").as_bytes());
        assert!(id.matches(b"hello"));
        assert!(!id.matches(b"hellO"));
        assert_eq!(ChunkId::from_slice(id.as_bytes()), Some(id));
        assert_eq!(ChunkId::from_slice(&[0; 31]), None);
        assert_eq!(id.to_string().len(), 64);
    }
}
