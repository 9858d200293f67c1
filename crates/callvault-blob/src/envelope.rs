//! Envelope encryption of a call's audio, with no I/O.
//!
//! Every call gets a fresh 256-bit data key. Each audio chunk is sealed with AES-256-GCM under
//! that key; the associated data binds the call id, the jurisdiction and the chunk's sequence
//! number, so a chunk moved to another call, jurisdiction or position does not open. The data key
//! itself is sealed ("wrapped") for the jurisdiction; the metadata store keeps the wrapped key,
//! and deleting it crypto-shreds the call.
//!
//! Formats (all versioned, so old recordings stay readable when a format changes):
//! - sealed chunk: `[0x01] ciphertext tag(16)`
//! - wrapped data key, version 1 (clusters made before key custody): AES-256-GCM under the
//!   jurisdiction's symmetric key-encryption key (KEK), `[0x01] nonce(12) ciphertext(32) tag(16)`
//!   — 61 bytes. Whoever wraps can unwrap, so ingest no longer writes it; the keys role opens it
//!   with the old KEKs ([`KeyRing`]).
//! - wrapped data key, version 2: HPKE sealed to the jurisdiction's public key, so whoever
//!   wraps cannot unwrap (see [`crate::custody`]) — 1169 bytes.
//!
//! Key-encryption keys are loaded from a key file or an environment variable (see [`KeyRing`]).
//! They are never printed (their `Debug` redacts) and are zeroized when dropped.
//!
//! ARCHITECTURE.md names XChaCha20-Poly1305 for chunks; this module uses AES-256-GCM from
//! `ring` instead, because it is about three times faster on this hardware (DEPENDENCIES.md,
//! and `benches/blob.rs`), and with a fresh key per call the short GCM nonce is not a concern.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use callvault_core::{CallId, Jurisdiction};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::chunk::ChunkId;

/// Version byte of a sealed chunk.
const CHUNK_V1: u8 = 1;
/// Version byte of a wrapped data key.
const WRAPPED_V1: u8 = 1;
/// AES-256-GCM tag length.
const TAG_LEN: usize = 16;
/// Length of a data key and of a key-encryption key.
const KEY_LEN: usize = 32;
/// Length of a v1 wrapped data key.
pub const WRAPPED_KEY_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;
/// Bytes a sealed chunk adds to its plaintext (version byte and tag).
pub const CHUNK_OVERHEAD: usize = 1 + TAG_LEN;

/// Environment variable [`KeyRing::from_env`] reads by default.
pub const KEK_ENV_VAR: &str = "CALLVAULT_KEKS";

/// What can go wrong sealing, opening, wrapping or loading keys. Messages never contain key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The key ring holds no key for this jurisdiction.
    #[error("no key-encryption key for jurisdiction {0}")]
    NoKeyFor(Jurisdiction),
    /// Authentication failed: wrong key, wrong call / jurisdiction / position, or tampered bytes.
    #[error(
        "{what} failed to authenticate (wrong key, wrong call, jurisdiction or position, or tampered bytes)"
    )]
    Authentication {
        /// A sealed chunk or a wrapped key.
        what: &'static str,
    },
    /// The bytes are not in a format this version understands.
    #[error("{what}: {reason}")]
    Format {
        /// A sealed chunk or a wrapped key.
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The key file or variable is malformed. The message names the entry, never its value.
    #[error("key-encryption keys from {source_name}: {reason}")]
    KeySource {
        /// The file path or variable name.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A jurisdiction's key-encryption key: 32 bytes, zeroized on drop, never printed.
pub struct KeyEncryptionKey(Zeroizing<[u8; KEY_LEN]>);

impl KeyEncryptionKey {
    /// Wraps 32 raw key bytes; the caller should zeroize its own copy.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        KeyEncryptionKey(Zeroizing::new(bytes))
    }

    /// Parses 64 hex characters.
    fn from_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 2 * KEY_LEN {
            return Err(format!(
                "expected {} hex characters, found {}",
                2 * KEY_LEN,
                text.len()
            ));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text, bytes.as_mut_slice())
            .map_err(|_| "not hexadecimal".to_string())?;
        Ok(KeyEncryptionKey(bytes))
    }

    fn aead_key(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.0.as_slice()).expect("32-byte key"))
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

/// The key-encryption keys of the jurisdictions this process serves.
///
/// # Key file format
///
/// A TOML file with one entry per jurisdiction, the key as 64 hex characters (32 bytes):
///
/// ```toml
/// # callvault key-encryption keys. Mode 0600, owned by the callvault user.
/// "US-TX" = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
/// "US-CA" = "…"
/// ```
///
/// Unknown jurisdiction codes and malformed keys are errors naming the entry (never the value).
/// The environment variable form ([`KeyRing::from_env`]) is the same TOML text, so
/// `CALLVAULT_KEKS='"US-TX" = "…"'` works for a single key.
#[derive(Default)]
pub struct KeyRing {
    keys: BTreeMap<Jurisdiction, KeyEncryptionKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The jurisdictions are not secret; the keys are.
        f.debug_struct("KeyRing")
            .field("jurisdictions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a jurisdiction's key.
    pub fn insert(&mut self, jurisdiction: Jurisdiction, key: KeyEncryptionKey) {
        self.keys.insert(jurisdiction, key);
    }

    /// Whether the ring holds a key for `jurisdiction`.
    pub fn contains(&self, jurisdiction: Jurisdiction) -> bool {
        self.keys.contains_key(&jurisdiction)
    }

    /// The jurisdictions this ring holds keys for.
    pub fn jurisdictions(&self) -> impl Iterator<Item = Jurisdiction> + '_ {
        self.keys.keys().copied()
    }

    /// Loads a key file (format above).
    pub fn load_file(path: &Path) -> Result<Self, EnvelopeError> {
        let name = path.display().to_string();
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            EnvelopeError::KeySource {
                source_name: name.clone(),
                reason: format!("cannot read: {e}"),
            }
        })?);
        Self::parse(&text, &name)
    }

    /// Loads keys from the environment variable `var` (same TOML text as the key file).
    pub fn from_env(var: &str) -> Result<Self, EnvelopeError> {
        let text = Zeroizing::new(std::env::var(var).map_err(|e| EnvelopeError::KeySource {
            source_name: format!("${var}"),
            reason: e.to_string(),
        })?);
        Self::parse(&text, &format!("${var}"))
    }

    /// Parses key-file text; `source_name` only labels errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, EnvelopeError> {
        let err = |reason: String| EnvelopeError::KeySource {
            source_name: source_name.to_string(),
            reason,
        };
        // toml's error message may quote the offending line, which could hold a key: keep only
        // the position.
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            err(match e.span() {
                Some(span) => format!("not valid TOML (near byte {})", span.start),
                None => "not valid TOML".to_string(),
            })
        })?;
        let mut ring = KeyRing::new();
        let mut failure = None;
        for (code, value) in table.iter_mut() {
            let parsed = match value {
                toml::Value::String(hex_text) => {
                    let parsed = KeyEncryptionKey::from_hex(hex_text);
                    hex_text.zeroize();
                    parsed
                }
                _ => Err("the key must be a string of 64 hex characters".to_string()),
            };
            if failure.is_some() {
                continue; // keep zeroizing the remaining values
            }
            match (Jurisdiction::from_code(code), parsed) {
                (Ok(j), Ok(key)) => ring.insert(j, key),
                (Err(e), _) => failure = Some(err(e.to_string())),
                (_, Err(reason)) => failure = Some(err(format!("entry {code:?}: {reason}"))),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(ring),
        }
    }

    fn kek(&self, jurisdiction: Jurisdiction) -> Result<&KeyEncryptionKey, EnvelopeError> {
        self.keys
            .get(&jurisdiction)
            .ok_or(EnvelopeError::NoKeyFor(jurisdiction))
    }
}

/// A call's data key in the clear: zeroized on drop, never printed. Only a sealer (ingest, which
/// draws it) and an opener (the api, after a release) hold one, for one call.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, EnvelopeError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(key.as_mut_slice())
            .map_err(|_| EnvelopeError::Random)?;
        Ok(DataKey(key))
    }

    /// A key from unwrapped bytes; anything but 32 bytes is refused.
    pub(crate) fn from_slice(bytes: &[u8], what: &'static str) -> Result<Self, EnvelopeError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(EnvelopeError::Format {
                what,
                reason: format!("a data key is {KEY_LEN} bytes, found {}", bytes.len()),
            });
        }
        key.copy_from_slice(bytes);
        Ok(DataKey(key))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    fn aead_key(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.as_bytes()).expect("32-byte key"))
    }
}

/// Wraps a call's data key for its jurisdiction: the jurisdictions' public keys (version 2, what
/// ingest does) or, for old clusters and tests, their symmetric keys (version 1).
pub trait WrapDataKey {
    /// `key` wrapped for `call` of `jurisdiction`.
    fn wrap(
        &self,
        call: &CallId,
        jurisdiction: Jurisdiction,
        key: &DataKey,
    ) -> Result<WrappedDataKey, EnvelopeError>;
}

/// Unwraps a call's data key: the only thing that can turn what the metadata store keeps into a
/// key. The keys role's private keys implement it ([`crate::custody::LocalCustodian`]); a
/// per-state KMS or HSM can too.
pub trait KeyCustodian: Send + Sync {
    /// The data key of `call` of `jurisdiction`. Fails if `wrapped` belongs to another call or
    /// jurisdiction, was altered, or is for a jurisdiction this custodian holds no key of.
    fn unwrap(
        &self,
        call: &CallId,
        jurisdiction: Jurisdiction,
        wrapped: &WrappedDataKey,
    ) -> Result<DataKey, EnvelopeError>;
}

/// A data key sealed for its jurisdiction; what the metadata store keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey(Vec<u8>);

impl WrappedDataKey {
    /// The stored form: a version byte, then the version's fields.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The format version (1: symmetric KEK, 2: HPKE to the jurisdiction's public key).
    pub fn version(&self) -> u8 {
        self.0[0]
    }

    /// Checks the version and length of stored bytes; authenticity is checked on unwrap.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let fail = |reason: String| EnvelopeError::Format {
            what: "wrapped data key",
            reason,
        };
        let expected = match bytes.first() {
            Some(&WRAPPED_V1) => WRAPPED_KEY_LEN,
            Some(&crate::custody::WRAPPED_V2) => crate::custody::WRAPPED_V2_LEN,
            Some(v) => return Err(fail(format!("unknown version {v}"))),
            None => return Err(fail("empty".into())),
        };
        if bytes.len() != expected {
            return Err(fail(format!(
                "version {} is {expected} bytes, found {}",
                bytes[0],
                bytes.len()
            )));
        }
        Ok(WrappedDataKey(bytes.into()))
    }

    /// Wraps stored-form bytes this crate made.
    pub(crate) fn from_parts(version: u8, parts: &[&[u8]]) -> Self {
        let mut bytes = vec![version];
        for part in parts {
            bytes.extend_from_slice(part);
        }
        WrappedDataKey(bytes)
    }
}

impl fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedDataKey({} bytes)", self.0.len())
    }
}

/// Associated data of a wrapped key: domain, version, jurisdiction and call id, length-prefixed.
pub(crate) fn wrap_aad(version: u8, jurisdiction: Jurisdiction, call: &CallId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"callvault/data-key-wrap");
    aad.push(version);
    push_prefixed(&mut aad, jurisdiction.code().as_bytes());
    push_prefixed(&mut aad, call.as_str().as_bytes());
    aad
}

/// Associated data of a chunk: domain, version, call id, jurisdiction, sequence number.
fn chunk_aad(call: &CallId, jurisdiction: Jurisdiction, seq: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"callvault/chunk");
    aad.push(CHUNK_V1);
    push_prefixed(&mut aad, call.as_str().as_bytes());
    push_prefixed(&mut aad, jurisdiction.code().as_bytes());
    aad.extend_from_slice(&seq.to_be_bytes());
    aad
}

/// Appends a 16-bit big-endian length, then the bytes, so no two field lists share an encoding.
pub(crate) fn push_prefixed(out: &mut Vec<u8>, field: &[u8]) {
    let len = u16::try_from(field.len()).expect("AAD fields are short identifiers");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// The nonce of chunk `seq`.
///
/// Why a counter is safe here: AES-GCM breaks if a (key, nonce) pair ever repeats. Every call has
/// its own freshly drawn random data key, used for that call's chunks only, and each chunk of a
/// call has a distinct sequence number; so no (key, nonce) pair repeats. The caller must not seal
/// two different plaintexts under the same `seq` of one [`CallSealer`] (ingest numbers chunks from
/// the platform's stream and rejects duplicate sequence numbers); a re-sent identical chunk gives
/// identical ciphertext, which leaks nothing.
fn chunk_nonce(seq: u64) -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[NONCE_LEN - 8..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

/// Seals the chunks of one call under a fresh data key.
pub struct CallSealer {
    call: CallId,
    jurisdiction: Jurisdiction,
    key: LessSafeKey,
    wrapped: WrappedDataKey,
}

impl fmt::Debug for CallSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSealer")
            .field("call", &self.call)
            .field("jurisdiction", &self.jurisdiction)
            .finish_non_exhaustive()
    }
}

/// One sealed chunk and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedChunk {
    /// blake3 of `bytes`.
    pub id: ChunkId,
    /// The sealed chunk, as stored on blob shards.
    pub bytes: Vec<u8>,
}

impl WrapDataKey for KeyRing {
    /// Version 1: AES-256-GCM under the jurisdiction's KEK.
    fn wrap(
        &self,
        call: &CallId,
        jurisdiction: Jurisdiction,
        key: &DataKey,
    ) -> Result<WrappedDataKey, EnvelopeError> {
        let kek = self.kek(jurisdiction)?;
        // A random 96-bit nonce per wrap. One KEK wraps one key per call; at tens of millions of
        // calls per jurisdiction the chance of a nonce collision stays far below NIST's 2^-32
        // bound (which allows 2^32 random nonces per key).
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| EnvelopeError::Random)?;
        let mut sealed = Zeroizing::new(key.as_bytes().to_vec());
        let tag = kek
            .aead_key()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(WRAPPED_V1, jurisdiction, call)),
                sealed.as_mut_slice(),
            )
            .map_err(|_| EnvelopeError::Random)?;
        Ok(WrappedDataKey::from_parts(
            WRAPPED_V1,
            &[&nonce, &sealed, tag.as_ref()],
        ))
    }
}

impl KeyCustodian for KeyRing {
    /// Version 1 only: the KEK that wrapped it.
    fn unwrap(
        &self,
        call: &CallId,
        jurisdiction: Jurisdiction,
        wrapped: &WrappedDataKey,
    ) -> Result<DataKey, EnvelopeError> {
        let bytes = wrapped.as_bytes();
        if wrapped.version() != WRAPPED_V1 {
            return Err(EnvelopeError::Format {
                what: "wrapped data key",
                reason: format!(
                    "version {} is not opened with a key-encryption key",
                    wrapped.version()
                ),
            });
        }
        let kek = self.kek(jurisdiction)?;
        let nonce =
            Nonce::try_assume_unique_for_key(&bytes[1..1 + NONCE_LEN]).expect("length checked");
        let mut sealed = Zeroizing::new(bytes[1 + NONCE_LEN..].to_vec());
        let data_key = kek
            .aead_key()
            .open_in_place(
                nonce,
                Aad::from(wrap_aad(WRAPPED_V1, jurisdiction, call)),
                sealed.as_mut_slice(),
            )
            .map_err(|_| EnvelopeError::Authentication {
                what: "wrapped data key",
            })?;
        DataKey::from_slice(data_key, "wrapped data key")
    }
}

impl CallSealer {
    /// Draws a fresh data key for `call` and wraps it for the jurisdiction with `wrapper`.
    pub fn new(
        wrapper: &impl WrapDataKey,
        call: &CallId,
        jurisdiction: Jurisdiction,
    ) -> Result<Self, EnvelopeError> {
        let data_key = DataKey::generate()?;
        let wrapped = wrapper.wrap(call, jurisdiction, &data_key)?;
        Ok(CallSealer {
            call: call.clone(),
            jurisdiction,
            key: data_key.aead_key(),
            wrapped,
        })
    }

    /// The wrapped data key, to be committed with the call in the metadata store.
    pub fn wrapped_key(&self) -> &WrappedDataKey {
        &self.wrapped
    }

    /// Seals chunk `seq` and names it.
    pub fn seal(&self, seq: u64, plaintext: &[u8]) -> SealedChunk {
        let mut bytes = Vec::with_capacity(plaintext.len() + CHUNK_OVERHEAD);
        bytes.push(CHUNK_V1);
        bytes.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                chunk_nonce(seq),
                Aad::from(chunk_aad(&self.call, self.jurisdiction, seq)),
                &mut bytes[1..],
            )
            // ring only fails for inputs beyond GCM's 64 GiB per message.
            .expect("chunk within AES-GCM's length limit");
        bytes.extend_from_slice(tag.as_ref());
        SealedChunk {
            id: ChunkId::of(&bytes),
            bytes,
        }
    }
}

/// Opens the chunks of one call, given its wrapped data key.
pub struct CallOpener {
    call: CallId,
    jurisdiction: Jurisdiction,
    key: LessSafeKey,
}

impl fmt::Debug for CallOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallOpener")
            .field("call", &self.call)
            .field("jurisdiction", &self.jurisdiction)
            .finish_non_exhaustive()
    }
}

impl CallOpener {
    /// Unwraps the call's data key with `custodian`. Fails if the wrapped key belongs to another
    /// call or jurisdiction, or was altered.
    pub fn new(
        custodian: &(impl KeyCustodian + ?Sized),
        call: &CallId,
        jurisdiction: Jurisdiction,
        wrapped: &WrappedDataKey,
    ) -> Result<Self, EnvelopeError> {
        let key = custodian.unwrap(call, jurisdiction, wrapped)?;
        Ok(Self::with_key(call, jurisdiction, &key))
    }

    /// Opens `call`'s chunks with its data key (as a key release delivered it).
    pub fn with_key(call: &CallId, jurisdiction: Jurisdiction, key: &DataKey) -> Self {
        CallOpener {
            call: call.clone(),
            jurisdiction,
            key: key.aead_key(),
        }
    }

    /// Opens chunk `seq`. Fails unless the chunk was sealed for this call, jurisdiction and
    /// position, under this call's key, and is unaltered.
    pub fn open(&self, seq: u64, sealed: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        match sealed.first() {
            Some(&CHUNK_V1) if sealed.len() >= CHUNK_OVERHEAD => {}
            Some(&CHUNK_V1) => {
                return Err(EnvelopeError::Format {
                    what: "sealed chunk",
                    reason: format!("shorter than the {CHUNK_OVERHEAD}-byte minimum"),
                });
            }
            Some(v) => {
                return Err(EnvelopeError::Format {
                    what: "sealed chunk",
                    reason: format!("unknown version {v}"),
                });
            }
            None => {
                return Err(EnvelopeError::Format {
                    what: "sealed chunk",
                    reason: "empty".into(),
                });
            }
        }
        let mut buf = sealed[1..].to_vec();
        let len = self
            .key
            .open_in_place(
                chunk_nonce(seq),
                Aad::from(chunk_aad(&self.call, self.jurisdiction, seq)),
                &mut buf,
            )
            .map_err(|_| EnvelopeError::Authentication {
                what: "sealed chunk",
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::parse(
            r#"
            "US-TX" = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
            "US-CA" = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100"
            "#,
            "test",
        )
        .unwrap()
    }

    fn call(id: &str) -> CallId {
        CallId::new(id).unwrap()
    }

    #[test]
    fn chunks_round_trip() {
        let ring = ring();
        let sealer = CallSealer::new(&ring, &call("c1"), Jurisdiction::Tx).unwrap();
        let opener =
            CallOpener::new(&ring, &call("c1"), Jurisdiction::Tx, sealer.wrapped_key()).unwrap();
        for (seq, plain) in [
            (0u64, &b""[..]),
            (1, b"audio"),
            (u64::MAX, &[7u8; 70_000][..]),
        ] {
            let sealed = sealer.seal(seq, plain);
            assert_eq!(sealed.id, ChunkId::of(&sealed.bytes));
            assert_eq!(sealed.bytes.len(), plain.len() + CHUNK_OVERHEAD);
            if !plain.is_empty() {
                assert_ne!(
                    &sealed.bytes[1..1 + plain.len()],
                    plain,
                    "ciphertext is plaintext"
                );
            }
            assert_eq!(opener.open(seq, &sealed.bytes).unwrap(), plain);
        }
    }

    #[test]
    fn every_call_gets_a_fresh_key() {
        let ring = ring();
        let a = CallSealer::new(&ring, &call("c1"), Jurisdiction::Tx).unwrap();
        let b = CallSealer::new(&ring, &call("c1"), Jurisdiction::Tx).unwrap();
        assert_ne!(a.wrapped_key(), b.wrapped_key());
        assert_ne!(a.seal(0, b"same").bytes, b.seal(0, b"same").bytes);
    }

    #[test]
    fn a_chunk_moved_to_another_call_jurisdiction_or_position_fails() {
        let ring = ring();
        let sealer = CallSealer::new(&ring, &call("c1"), Jurisdiction::Tx).unwrap();
        let sealed = sealer.seal(5, b"privileged? no, ordinary audio");
        let wrapped = sealer.wrapped_key();
        let ok = CallOpener::new(&ring, &call("c1"), Jurisdiction::Tx, wrapped).unwrap();
        assert!(ok.open(5, &sealed.bytes).is_ok());
        // Another position.
        assert!(matches!(
            ok.open(6, &sealed.bytes),
            Err(EnvelopeError::Authentication { .. })
        ));
        // Another call holding the same data key (as if the wrapped key had been copied and the
        // opener built from it): the AAD still differs.
        let other_call = CallOpener {
            call: call("c2"),
            jurisdiction: Jurisdiction::Tx,
            key: ok.key_clone_for_test(&ring, &call("c1"), wrapped),
        };
        assert!(other_call.open(5, &sealed.bytes).is_err());
        let other_jurisdiction = CallOpener {
            call: call("c1"),
            jurisdiction: Jurisdiction::Ca,
            key: ok.key_clone_for_test(&ring, &call("c1"), wrapped),
        };
        assert!(other_jurisdiction.open(5, &sealed.bytes).is_err());
        // A chunk of another call (another key) under this call's opener.
        let stranger = CallSealer::new(&ring, &call("c1"), Jurisdiction::Tx).unwrap();
        assert!(ok.open(5, &stranger.seal(5, b"x").bytes).is_err());
    }

    impl CallOpener {
        /// Rebuilds the data key, so a test can pair it with the wrong call or jurisdiction.
        fn key_clone_for_test(
            &self,
            ring: &KeyRing,
            call: &CallId,
            wrapped: &WrappedDataKey,
        ) -> LessSafeKey {
            let kek = ring.kek(self.jurisdiction).unwrap();
            let bytes = wrapped.as_bytes();
            let nonce = Nonce::try_assume_unique_for_key(&bytes[1..1 + NONCE_LEN]).unwrap();
            let mut sealed = bytes[1 + NONCE_LEN..].to_vec();
            let key = kek
                .aead_key()
                .open_in_place(
                    nonce,
                    Aad::from(wrap_aad(WRAPPED_V1, self.jurisdiction, call)),
                    &mut sealed,
                )
                .unwrap();
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap())
        }
    }

    #[test]
    fn a_wrapped_key_moved_to_another_call_or_jurisdiction_fails() {
        let ring = ring();
        let sealer = CallSealer::new(&ring, &call("c1"), Jurisdiction::Tx).unwrap();
        let wrapped = sealer.wrapped_key();
        assert!(matches!(
            CallOpener::new(&ring, &call("c2"), Jurisdiction::Tx, wrapped),
            Err(EnvelopeError::Authentication { .. })
        ));
        // Another jurisdiction: a different KEK and different AAD.
        assert!(matches!(
            CallOpener::new(&ring, &call("c1"), Jurisdiction::Ca, wrapped),
            Err(EnvelopeError::Authentication { .. })
        ));
        // A jurisdiction with no key at all.
        assert!(matches!(
            CallOpener::new(&ring, &call("c1"), Jurisdiction::Ny, wrapped),
            Err(EnvelopeError::NoKeyFor(Jurisdiction::Ny))
        ));
        // The same KEK for two jurisdictions must still not let a key move between them.
        let mut shared = KeyRing::new();
        shared.insert(Jurisdiction::Tx, KeyEncryptionKey::from_bytes([9; 32]));
        shared.insert(Jurisdiction::Ca, KeyEncryptionKey::from_bytes([9; 32]));
        let s = CallSealer::new(&shared, &call("c1"), Jurisdiction::Tx).unwrap();
        assert!(CallOpener::new(&shared, &call("c1"), Jurisdiction::Ca, s.wrapped_key()).is_err());
        assert!(CallOpener::new(&shared, &call("c1"), Jurisdiction::Tx, s.wrapped_key()).is_ok());
    }

    #[test]
    fn every_tampered_byte_fails() {
        let ring = ring();
        let sealer = CallSealer::new(&ring, &call("c1"), Jurisdiction::Tx).unwrap();
        let opener =
            CallOpener::new(&ring, &call("c1"), Jurisdiction::Tx, sealer.wrapped_key()).unwrap();
        let sealed = sealer.seal(3, b"0123456789abcdef0123");
        for i in 0..sealed.bytes.len() {
            let mut bad = sealed.bytes.clone();
            bad[i] ^= 0x01;
            assert!(opener.open(3, &bad).is_err(), "flip at {i} accepted");
        }
        assert!(
            opener
                .open(3, &sealed.bytes[..sealed.bytes.len() - 1])
                .is_err()
        );
        assert!(opener.open(3, &[]).is_err());
        let wrapped = sealer.wrapped_key().as_bytes().to_vec();
        for i in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            bad[i] ^= 0x80;
            let result = WrappedDataKey::from_bytes(&bad)
                .and_then(|w| CallOpener::new(&ring, &call("c1"), Jurisdiction::Tx, &w));
            assert!(result.is_err(), "flip at {i} accepted");
        }
        assert!(WrappedDataKey::from_bytes(&wrapped[..60]).is_err());
    }

    #[test]
    fn key_files_parse_strictly_and_never_echo_keys() {
        let secret = "abababababababababababababababababababababababababababababababab";
        assert!(KeyRing::parse(&format!("\"US-TX\" = \"{secret}\""), "f").is_ok());
        for bad in [
            format!("\"US-XX\" = \"{secret}\""),
            format!("\"US-TX\" = \"{}\"", &secret[..62]),
            format!("\"US-TX\" = \"{}zz\"", &secret[..62]),
            "\"US-TX\" = 5".to_string(),
            format!("\"US-TX\" = \"{secret}"),
        ] {
            let err = KeyRing::parse(&bad, "keys.toml").unwrap_err().to_string();
            assert!(err.contains("keys.toml"), "{err}");
            assert!(
                !err.contains(&secret[..16]),
                "error echoes key material: {err}"
            );
        }
        let ring = KeyRing::parse(&format!("\"US-TX\" = \"{secret}\""), "f").unwrap();
        let shown = format!("{ring:?} {:?}", ring.kek(Jurisdiction::Tx).unwrap());
        assert!(!shown.contains("abab") && !shown.contains("171"), "{shown}");
        assert!(shown.contains("US-TX") || shown.contains("Tx"), "{shown}");
    }

    #[test]
    fn key_file_and_env_var_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keks.toml");
        let line =
            "\"US-BOP\" = \"0000000000000000000000000000000000000000000000000000000000000001\"";
        std::fs::write(&path, line).unwrap();
        let ring = KeyRing::load_file(&path).unwrap();
        assert!(ring.contains(Jurisdiction::Bop));
        assert!(KeyRing::load_file(&dir.path().join("absent")).is_err());
        // SAFETY: this is the only test that touches this variable.
        unsafe { std::env::set_var("CALLVAULT_TEST_KEKS_ENVELOPE", line) };
        let ring = KeyRing::from_env("CALLVAULT_TEST_KEKS_ENVELOPE").unwrap();
        assert_eq!(
            ring.jurisdictions().collect::<Vec<_>>(),
            [Jurisdiction::Bop]
        );
        assert!(KeyRing::from_env("CALLVAULT_TEST_KEKS_UNSET").is_err());
    }
}
