//! Checkpoints (<https://c2sp.org/tlog-checkpoint>): the origin, the tree size and the root hash,
//! one per line, signed as a C2SP note:
//!
//! ```text
//! callvault.example/audit
//! 1048576
//! <base64 root hash>
//!
//! — callvault.example/audit <base64(key id || Ed25519 signature)>
//! ```
//!
//! An auditor pins the log's vkey and origin, opens each checkpoint with
//! [`Checkpoint::open`], and accepts a newer one only with a consistency proof from the last one
//! it trusted ([`Checkpoint::verify_extends`]): a rollback, a fork or a rewritten entry fails.

use crate::hash::{Hash, empty_root};
use crate::note::{NoteError, NoteSigner, NoteVerifier};
use crate::proof::{ConsistencyProof, VerifyError, verify_consistency};

/// The longest origin line, in bytes.
pub const MAX_ORIGIN: usize = 255;

/// Why a checkpoint could not be made, opened or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed note around the checkpoint is malformed or not signed by the pinned key.
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    /// The origin is empty, too long, or holds control characters.
    #[error("invalid origin: must be 1 to {MAX_ORIGIN} bytes without control characters")]
    BadOrigin,
    /// The checkpoint text is not origin, size and root hash lines.
    #[error("malformed checkpoint body, line {line}: {reason}")]
    MalformedBody {
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The checkpoint is for another log.
    #[error("checkpoint is for origin {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// The pinned origin.
        expected: String,
        /// The origin in the checkpoint.
        found: String,
    },
    /// The newer checkpoint does not extend the older one: a rollback, a fork, or a rewrite.
    #[error("checkpoint does not extend the trusted one: {0}")]
    Inconsistent(#[from] VerifyError),
}

/// A log's signed statement of its size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    if origin.is_empty() || origin.len() > MAX_ORIGIN || origin.chars().any(char::is_control) {
        return Err(CheckpointError::BadOrigin);
    }
    Ok(())
}

impl Checkpoint {
    /// A checkpoint for the log named `origin` at `size` leaves with root `root`.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Checkpoint, CheckpointError> {
        check_origin(origin)?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// Extension lines after the root hash (callvault writes none; other logs may).
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The checkpoint text: `<origin>\n<size>\n<base64 root>\n`, then any extension lines.
    pub fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Parses checkpoint text strictly: a non-empty origin, a decimal size without sign or
    /// leading zeros, a canonical base64 SHA-256 root, then optional non-empty extension lines.
    pub fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
        let malformed = |line, reason| CheckpointError::MalformedBody { line, reason };
        let body = text
            .strip_suffix('\n')
            .ok_or(malformed(1, "text does not end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        check_origin(origin).map_err(|_| malformed(1, "invalid origin"))?;
        let size = lines.next().ok_or(malformed(2, "missing tree size"))?;
        let canonical_decimal = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size = canonical_decimal
            .then(|| size.parse::<u64>().ok())
            .flatten()
            .ok_or(malformed(2, "tree size is not a canonical decimal u64"))?;
        let root = lines.next().ok_or(malformed(3, "missing root hash"))?;
        let root = Hash::from_base64(root).ok_or(malformed(
            3,
            "root hash is not canonical base64 of 32 bytes",
        ))?;
        let mut extensions = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                return Err(malformed(4 + i, "empty extension line"));
            }
            extensions.push(line.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint; returns the signed note to serve.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        Ok(signer.sign(&self.body())?)
    }

    /// Opens a signed checkpoint: the note must carry a valid signature by `verifier`, and the
    /// checkpoint must be for `origin`.
    pub fn open(
        note: &str,
        verifier: &NoteVerifier,
        origin: &str,
    ) -> Result<Checkpoint, CheckpointError> {
        let text = verifier.verify(note)?;
        let checkpoint = Checkpoint::parse_body(text)?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: origin.to_owned(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }

    /// Checks that this (newer) checkpoint extends `trusted` through `proof`. A smaller size
    /// (rollback), the same size with another root, or a larger tree that rewrote any earlier
    /// entry all fail.
    pub fn verify_extends(
        &self,
        trusted: &Checkpoint,
        proof: &ConsistencyProof,
    ) -> Result<(), CheckpointError> {
        if self.origin != trusted.origin {
            return Err(CheckpointError::WrongOrigin {
                expected: trusted.origin.clone(),
                found: self.origin.clone(),
            });
        }
        if proof.first != trusted.size || proof.second != self.size {
            return Err(VerifyError::WrongProofSizes {
                first: proof.first,
                second: proof.second,
                want_first: trusted.size,
                want_second: self.size,
            }
            .into());
        }
        if trusted.size == 0 {
            // Everything extends the empty tree, whose root is fixed.
            if trusted.root != empty_root() {
                return Err(VerifyError::FirstRootMismatch {
                    expected: trusted.root,
                    computed: empty_root(),
                }
                .into());
            }
            if !proof.hashes.is_empty() {
                return Err(VerifyError::WrongProofLength {
                    expected: 0,
                    got: proof.hashes.len(),
                }
                .into());
            }
            return Ok(());
        }
        verify_consistency(
            trusted.size,
            self.size,
            &trusted.root,
            &self.root,
            &proof.hashes,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    const ORIGIN: &str = "callvault.example/audit";

    fn signer() -> NoteSigner {
        NoteSigner::from_seed(ORIGIN, &[7; 32]).unwrap()
    }

    #[test]
    fn signs_and_opens() {
        let cp = Checkpoint::new(ORIGIN, 42, leaf_hash(b"x")).unwrap();
        let note = cp.sign(&signer()).unwrap();
        assert!(note.starts_with(&format!(
            "{ORIGIN}\n42\n{}\n\n\u{2014} {ORIGIN} ",
            cp.root().to_base64()
        )));
        let opened = Checkpoint::open(&note, &signer().verifier(), ORIGIN).unwrap();
        assert_eq!(opened, cp);
        assert!(matches!(
            Checkpoint::open(&note, &signer().verifier(), "other.example/log"),
            Err(CheckpointError::WrongOrigin { .. })
        ));
    }

    #[test]
    fn body_parsing_is_strict() {
        let root = leaf_hash(b"r").to_base64();
        let ok = format!("{ORIGIN}\n10\n{root}\n");
        assert_eq!(Checkpoint::parse_body(&ok).unwrap().size(), 10);
        let with_ext = format!("{ORIGIN}\n10\n{root}\nextension line\n");
        assert_eq!(
            Checkpoint::parse_body(&with_ext).unwrap().extensions(),
            ["extension line"]
        );
        assert_eq!(Checkpoint::parse_body(&with_ext).unwrap().body(), with_ext);
        let bad = [
            format!("{ORIGIN}\n10\n{root}"),
            format!("\n10\n{root}\n"),
            format!("{ORIGIN}\n010\n{root}\n"),
            format!("{ORIGIN}\n+10\n{root}\n"),
            format!("{ORIGIN}\n-1\n{root}\n"),
            format!("{ORIGIN}\n 10\n{root}\n"),
            format!("{ORIGIN}\n18446744073709551616\n{root}\n"),
            format!("{ORIGIN}\n10\n{}\n", &root[..43]),
            format!("{ORIGIN}\n10\n{}\n", leaf_hash(b"r").to_hex()),
            format!("{ORIGIN}\n10\n"),
            format!("{ORIGIN}\n10\n{root}\n\nafter blank\n"),
            format!("{ORIGIN}\n"),
            String::new(),
        ];
        for text in &bad {
            assert!(Checkpoint::parse_body(text).is_err(), "accepted {text:?}");
        }
        assert_eq!(
            Checkpoint::parse_body(&format!("{ORIGIN}\n18446744073709551615\n{root}\n"))
                .unwrap()
                .size(),
            u64::MAX
        );
    }

    #[test]
    fn empty_tree_checkpoints_are_extended_by_anything_with_an_empty_proof() {
        let empty = Checkpoint::new(ORIGIN, 0, empty_root()).unwrap();
        let later = Checkpoint::new(ORIGIN, 5, leaf_hash(b"5")).unwrap();
        let proof = ConsistencyProof {
            first: 0,
            second: 5,
            hashes: vec![],
        };
        later.verify_extends(&empty, &proof).unwrap();
        let lying_empty = Checkpoint::new(ORIGIN, 0, leaf_hash(b"not empty")).unwrap();
        assert!(later.verify_extends(&lying_empty, &proof).is_err());
    }
}
