//! RFC 6962 / RFC 9162 §2.1.1 hashing with SHA-256: a leaf is `H(0x00 || entry)`, an interior
//! node is `H(0x01 || left || right)`, and the empty tree's root is `H("")`. The distinct
//! prefixes keep a leaf from ever being passed off as an interior node (second preimages).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest::{Context, SHA256, digest};

/// Bytes in a SHA-256 hash.
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash of a leaf, an interior node, or a whole tree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// The hash's bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Copies a hash from a slice that must be exactly [`HASH_LEN`] bytes long (as in a proof
    /// received over gRPC).
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; HASH_LEN]>::try_from(bytes).ok().map(Hash)
    }

    /// Standard base64 with padding, as checkpoints write root hashes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parses standard padded base64 of exactly [`HASH_LEN`] bytes; anything else is `None`.
    pub fn from_base64(text: &str) -> Option<Hash> {
        // 32 bytes are 44 base64 characters; checking first keeps a huge input from being decoded.
        if text.len() != 44 {
            return None;
        }
        Hash::from_slice(&STANDARD.decode(text).ok()?)
    }

    /// Lower-case hex, for logs and test vectors.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

fn finish(ctx: Context) -> Hash {
    let out = ctx.finish();
    Hash(out.as_ref().try_into().expect("SHA-256 output is 32 bytes"))
}

/// The root of a tree with no leaves: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Hash(
        digest(&SHA256, b"")
            .as_ref()
            .try_into()
            .expect("SHA-256 output is 32 bytes"),
    )
}

/// The hash of one leaf: `SHA-256(0x00 || entry)`, where `entry` is the exact stored bytes of an
/// audit entry.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(entry);
    finish(ctx)
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x01]);
    ctx.update(&left.0);
    ctx.update(&right.0);
    finish(ctx)
}

/// A plain SHA-256, for key ids and other non-tree uses.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut ctx = Context::new(&SHA256);
    for part in parts {
        ctx.update(part);
    }
    finish(ctx).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Hash {
        Hash::from_slice(&::hex::decode(s).unwrap()).unwrap()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root(),
            hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    #[test]
    fn leaf_and_node_hashes_match_rfc6962_vectors() {
        // transparency-dev/merkle testonly/constants.go (NodeHashes level 0 and 1): the leaf
        // hash of the empty entry, of 0x00, and the parent of those two.
        let l0 = leaf_hash(b"");
        let l1 = leaf_hash(&[0x00]);
        assert_eq!(
            l0,
            hex("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
        assert_eq!(
            l1,
            hex("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")
        );
        assert_eq!(
            node_hash(&l0, &l1),
            hex("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")
        );
        // Order matters, and a leaf is never its own node hash.
        assert_ne!(node_hash(&l1, &l0), node_hash(&l0, &l1));
    }

    #[test]
    fn base64_is_strict() {
        let h = leaf_hash(b"x");
        assert_eq!(Hash::from_base64(&h.to_base64()), Some(h));
        let b64 = h.to_base64();
        assert_eq!(Hash::from_base64(b64.trim_end_matches('=')), None);
        assert_eq!(Hash::from_base64(&format!("{b64}=")), None);
        assert_eq!(Hash::from_base64(&STANDARD.encode([0u8; 31])), None);
        // The last character carries unused bits; a non-zero value there is not canonical.
        let mut bad = b64.into_bytes();
        bad[42] = if bad[42] == b'B' { b'C' } else { b'B' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(Hash::from_base64(&bad), None, "{bad}");
    }
}
