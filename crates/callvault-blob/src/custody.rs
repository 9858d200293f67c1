//! Key custody: ingest can seal a call's data key for its jurisdiction but never open it, and a
//! key leaves custody only sealed to the one api node that asked for it.
//!
//! Each jurisdiction has a key pair. Ingest holds the public keys ([`JurisdictionPublicKeys`])
//! and wraps each call's data key with HPKE (RFC 9180) to the jurisdiction's public key, bound to
//! the call id and jurisdiction (wrapped key version 2). Only the keys role holds the private
//! keys ([`JurisdictionKeyPairs`], behind the [`KeyCustodian`] trait a per-state KMS or HSM can
//! implement). When the state machine has logged an allowed access, the keys role unwraps the
//! data key and seals it again, with HPKE, to a one-time public key the api node put in the
//! access record ([`ReleaseKeyPair`]): the released key opens only on the node that asked,
//! only for that access, call and jurisdiction.
//!
//! The suite is HPKE with the X-Wing KEM (ML-KEM-768 combined with X25519), HKDF-SHA256 and
//! ChaCha20-Poly1305, from the `hpke` crate. Recordings are kept for years, and wrapped keys sit
//! in the Raft log, in snapshots and in backups: a key wrapped only to X25519 could be opened by
//! whoever harvests it today and has a quantum computer later. X-Wing stays safe while either of
//! its halves does. The price is size: a version-2 wrapped key is 1169 bytes (version 1 was 61).
//!
//! Key files (never printed: `Debug` redacts; zeroized on drop):
//! - private keys, one 32-byte X-Wing seed per jurisdiction as 64 hex characters:
//!   `"US-TX" = "…"` (the same layout as the old KEK file);
//! - public keys, one 1216-byte X-Wing public key per jurisdiction in base64:
//!   `"US-TX" = "…"`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use callvault_core::{CallId, Jurisdiction};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::envelope::{
    DataKey, EnvelopeError, KeyCustodian, KeyRing, WrapDataKey, WrappedDataKey, push_prefixed,
    wrap_aad,
};

type Kem = hpke::kem::XWing;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// Version byte of a data key wrapped with HPKE to its jurisdiction's public key.
pub const WRAPPED_V2: u8 = 2;
/// Length of the HPKE encapsulated key (X-Wing).
const ENCAPPED_LEN: usize = 1120;
/// A data key (32 bytes) and its ChaCha20-Poly1305 tag (16).
const SEALED_KEY_LEN: usize = 32 + 16;
/// Length of a version-2 wrapped data key.
pub const WRAPPED_V2_LEN: usize = 1 + ENCAPPED_LEN + SEALED_KEY_LEN;
/// Length of an X-Wing public key.
pub const PUBLIC_KEY_LEN: usize = 1216;
/// Length of a released key: the encapsulated key and the sealed data key.
pub const RELEASED_KEY_LEN: usize = ENCAPPED_LEN + SEALED_KEY_LEN;

/// HPKE `info` of a wrapped data key.
const WRAP_INFO: &[u8] = b"callvault/data-key-wrap/v2";
/// HPKE `info` of a key release.
const RELEASE_INFO: &[u8] = b"callvault/key-release/v1";

fn hpke_seal(
    pk: &PublicKey,
    info: &[u8],
    key: &DataKey,
    aad: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), EnvelopeError> {
    let (encapped, sealed) =
        hpke::single_shot_seal::<Aead, Kdf, Kem>(&OpModeS::Base, pk, info, key.as_bytes(), aad)
            .map_err(|_| EnvelopeError::Random)?;
    Ok((encapped.to_bytes().to_vec(), sealed))
}

fn hpke_open(
    sk: &PrivateKey,
    info: &[u8],
    encapped: &[u8],
    sealed: &[u8],
    aad: &[u8],
    what: &'static str,
) -> Result<DataKey, EnvelopeError> {
    let encapped = EncappedKey::from_bytes(encapped).map_err(|_| EnvelopeError::Format {
        what,
        reason: "the encapsulated key does not decode".into(),
    })?;
    let plain = Zeroizing::new(
        hpke::single_shot_open::<Aead, Kdf, Kem>(&OpModeR::Base, sk, &encapped, info, sealed, aad)
            .map_err(|_| EnvelopeError::Authentication { what })?,
    );
    DataKey::from_slice(&plain, what)
}

/// The jurisdictions' public keys: what ingest wraps data keys with.
#[derive(Default, Clone)]
pub struct JurisdictionPublicKeys {
    keys: BTreeMap<Jurisdiction, PublicKey>,
}

impl fmt::Debug for JurisdictionPublicKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JurisdictionPublicKeys")
            .field("jurisdictions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn key_source(source_name: &str, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::KeySource {
        source_name: source_name.to_string(),
        reason: reason.into(),
    }
}

/// The `"US-XX" = "…"` entries of a key file, each value handed to `parse` and then zeroized.
fn parse_entries<T>(
    text: &str,
    source_name: &str,
    mut parse: impl FnMut(&str) -> Result<T, String>,
) -> Result<BTreeMap<Jurisdiction, T>, EnvelopeError> {
    // toml's error message may quote the offending line: keep only the position.
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        key_source(
            source_name,
            match e.span() {
                Some(span) => format!("not valid TOML (near byte {})", span.start),
                None => "not valid TOML".to_string(),
            },
        )
    })?;
    let mut out = BTreeMap::new();
    let mut failure = None;
    for (code, value) in table.iter_mut() {
        let parsed = match value {
            toml::Value::String(text) => {
                let parsed = parse(text.trim());
                text.zeroize();
                parsed
            }
            _ => Err("the key must be a string".to_string()),
        };
        if failure.is_some() {
            continue; // keep zeroizing the remaining values
        }
        match (Jurisdiction::from_code(code), parsed) {
            (Ok(j), Ok(key)) => {
                out.insert(j, key);
            }
            (Err(e), _) => failure = Some(key_source(source_name, e.to_string())),
            (_, Err(reason)) => {
                failure = Some(key_source(source_name, format!("entry {code:?}: {reason}")));
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn read_key_file(path: &Path) -> Result<Zeroizing<String>, EnvelopeError> {
    Ok(Zeroizing::new(std::fs::read_to_string(path).map_err(
        |e| key_source(&path.display().to_string(), format!("cannot read: {e}")),
    )?))
}

impl JurisdictionPublicKeys {
    /// Parses public-key file text (`"US-TX" = "<base64>"`); `source_name` only labels errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, EnvelopeError> {
        let keys = parse_entries(text, source_name, |value| {
            let bytes = BASE64.decode(value).map_err(|_| "not base64".to_string())?;
            if bytes.len() != PUBLIC_KEY_LEN {
                return Err(format!(
                    "an X-Wing public key is {PUBLIC_KEY_LEN} bytes, found {}",
                    bytes.len()
                ));
            }
            PublicKey::from_bytes(&bytes).map_err(|_| "not a valid X-Wing public key".to_string())
        })?;
        Ok(JurisdictionPublicKeys { keys })
    }

    /// Loads a public-key file.
    pub fn load_file(path: &Path) -> Result<Self, EnvelopeError> {
        Self::parse(&read_key_file(path)?, &path.display().to_string())
    }

    /// Whether there is a key for `jurisdiction`.
    pub fn contains(&self, jurisdiction: Jurisdiction) -> bool {
        self.keys.contains_key(&jurisdiction)
    }

    /// The file text of these keys.
    pub fn to_file_text(&self) -> String {
        let mut text = String::from(
            "# callvault jurisdictions' public keys (X-Wing, base64): ingest seals data keys to \
             them.\n",
        );
        for (j, key) in &self.keys {
            text.push_str(&format!(
                "{:?} = {:?}\n",
                j.code(),
                BASE64.encode(key.to_bytes())
            ));
        }
        text
    }
}

impl WrapDataKey for JurisdictionPublicKeys {
    /// Version 2: HPKE to the jurisdiction's public key; only its private key opens it.
    fn wrap(
        &self,
        call: &CallId,
        jurisdiction: Jurisdiction,
        key: &DataKey,
    ) -> Result<WrappedDataKey, EnvelopeError> {
        let pk = self
            .keys
            .get(&jurisdiction)
            .ok_or(EnvelopeError::NoKeyFor(jurisdiction))?;
        let aad = wrap_aad(WRAPPED_V2, jurisdiction, call);
        let (encapped, sealed) = hpke_seal(pk, WRAP_INFO, key, &aad)?;
        Ok(WrappedDataKey::from_parts(
            WRAPPED_V2,
            &[&encapped, &sealed],
        ))
    }
}

/// The jurisdictions' private keys: what the keys role holds, and nothing else does.
#[derive(Default)]
pub struct JurisdictionKeyPairs {
    keys: BTreeMap<Jurisdiction, PrivateKey>,
}

impl fmt::Debug for JurisdictionKeyPairs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JurisdictionKeyPairs")
            .field("jurisdictions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn seed_key(seed: &[u8; 32]) -> PrivateKey {
    PrivateKey::from_bytes(seed).expect("a 32-byte X-Wing seed")
}

impl JurisdictionKeyPairs {
    /// A fresh key pair for each of `jurisdictions`.
    pub fn generate(
        jurisdictions: impl IntoIterator<Item = Jurisdiction>,
    ) -> Result<Self, EnvelopeError> {
        let rng = SystemRandom::new();
        let mut keys = BTreeMap::new();
        for j in jurisdictions {
            let mut seed = Zeroizing::new([0u8; 32]);
            rng.fill(seed.as_mut_slice())
                .map_err(|_| EnvelopeError::Random)?;
            keys.insert(j, seed_key(&seed));
        }
        Ok(JurisdictionKeyPairs { keys })
    }

    /// Parses private-key file text (`"US-TX" = "<64 hex>"`); `source_name` only labels errors,
    /// which never contain key material.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, EnvelopeError> {
        let keys = parse_entries(text, source_name, |value| {
            if value.len() != 64 {
                return Err(format!("expected 64 hex characters, found {}", value.len()));
            }
            let mut seed = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(value, seed.as_mut_slice())
                .map_err(|_| "not hexadecimal".to_string())?;
            Ok(seed_key(&seed))
        })?;
        Ok(JurisdictionKeyPairs { keys })
    }

    /// Loads a private-key file.
    pub fn load_file(path: &Path) -> Result<Self, EnvelopeError> {
        Self::parse(&read_key_file(path)?, &path.display().to_string())
    }

    /// The file text of the private keys (a secret: mount it in the keys role only).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::from(
            "# callvault jurisdictions' private keys (X-Wing seeds). The keys role alone mounts \
             this file.\n",
        ));
        for (j, key) in &self.keys {
            let seed = Zeroizing::new(hex::encode(key.to_bytes()));
            text.push_str(&format!("{:?} = \"{}\"\n", j.code(), seed.as_str()));
        }
        text
    }

    /// The public halves, for ingest.
    pub fn public_keys(&self) -> JurisdictionPublicKeys {
        JurisdictionPublicKeys {
            keys: self
                .keys
                .iter()
                .map(|(j, sk)| (*j, Kem::sk_to_pk(sk)))
                .collect(),
        }
    }

    /// The jurisdictions these keys open.
    pub fn jurisdictions(&self) -> impl Iterator<Item = Jurisdiction> + '_ {
        self.keys.keys().copied()
    }
}

/// The keys role's custodian: the jurisdictions' private keys for version-2 wrapped keys and,
/// on clusters made before key custody, the old symmetric KEKs for version 1.
#[derive(Debug, Default)]
pub struct LocalCustodian {
    pairs: JurisdictionKeyPairs,
    legacy: KeyRing,
}

impl LocalCustodian {
    /// A custodian of `pairs`, opening version-1 keys with `legacy` (empty on new clusters).
    pub fn new(pairs: JurisdictionKeyPairs, legacy: KeyRing) -> Self {
        LocalCustodian { pairs, legacy }
    }
}

impl KeyCustodian for LocalCustodian {
    fn unwrap(
        &self,
        call: &CallId,
        jurisdiction: Jurisdiction,
        wrapped: &WrappedDataKey,
    ) -> Result<DataKey, EnvelopeError> {
        if wrapped.version() != WRAPPED_V2 {
            return self.legacy.unwrap(call, jurisdiction, wrapped);
        }
        let sk = self
            .pairs
            .keys
            .get(&jurisdiction)
            .ok_or(EnvelopeError::NoKeyFor(jurisdiction))?;
        let bytes = &wrapped.as_bytes()[1..];
        hpke_open(
            sk,
            WRAP_INFO,
            &bytes[..ENCAPPED_LEN],
            &bytes[ENCAPPED_LEN..],
            &wrap_aad(WRAPPED_V2, jurisdiction, call),
            "wrapped data key",
        )
    }
}

/// What a released key is bound to: the access record that allowed it, and its call.
fn release_aad(access: u64, jurisdiction: Jurisdiction, call: &CallId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"callvault/key-release");
    aad.extend_from_slice(&access.to_be_bytes());
    push_prefixed(&mut aad, jurisdiction.code().as_bytes());
    push_prefixed(&mut aad, call.as_str().as_bytes());
    aad
}

/// A one-time key pair an api node makes for one playback: its public half goes into the access
/// record, and only this node, holding the private half, can open the key released for it.
pub struct ReleaseKeyPair {
    sk: PrivateKey,
    pk: PublicKey,
}

impl fmt::Debug for ReleaseKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReleaseKeyPair(<redacted>)")
    }
}

impl ReleaseKeyPair {
    /// A fresh pair.
    pub fn generate() -> Result<Self, EnvelopeError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(seed.as_mut_slice())
            .map_err(|_| EnvelopeError::Random)?;
        let sk = seed_key(&seed);
        let pk = Kem::sk_to_pk(&sk);
        Ok(ReleaseKeyPair { sk, pk })
    }

    /// The public half, as the access record carries it.
    pub fn public_key(&self) -> Vec<u8> {
        self.pk.to_bytes().to_vec()
    }

    /// Opens a key released for `access` of `call`.
    pub fn open(
        &self,
        access: u64,
        jurisdiction: Jurisdiction,
        call: &CallId,
        released: &[u8],
    ) -> Result<DataKey, EnvelopeError> {
        if released.len() != RELEASED_KEY_LEN {
            return Err(EnvelopeError::Format {
                what: "released key",
                reason: format!(
                    "{RELEASED_KEY_LEN} bytes expected, found {}",
                    released.len()
                ),
            });
        }
        hpke_open(
            &self.sk,
            RELEASE_INFO,
            &released[..ENCAPPED_LEN],
            &released[ENCAPPED_LEN..],
            &release_aad(access, jurisdiction, call),
            "released key",
        )
    }
}

/// Seals `key` to `recipient` (a [`ReleaseKeyPair`]'s public half from the access record),
/// bound to `access`, `jurisdiction` and `call`.
pub fn seal_release(
    recipient: &[u8],
    access: u64,
    jurisdiction: Jurisdiction,
    call: &CallId,
    key: &DataKey,
) -> Result<Vec<u8>, EnvelopeError> {
    let pk = PublicKey::from_bytes(recipient).map_err(|_| EnvelopeError::Format {
        what: "release recipient",
        reason: format!("not an X-Wing public key ({} bytes)", recipient.len()),
    })?;
    let (mut encapped, sealed) = hpke_seal(
        &pk,
        RELEASE_INFO,
        key,
        &release_aad(access, jurisdiction, call),
    )?;
    encapped.extend_from_slice(&sealed);
    Ok(encapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{CallOpener, CallSealer};

    fn call(id: &str) -> CallId {
        CallId::new(id).unwrap()
    }

    #[test]
    fn ingest_seals_with_public_keys_and_only_the_private_keys_open() {
        let pairs = JurisdictionKeyPairs::generate([Jurisdiction::Tx, Jurisdiction::Ca]).unwrap();
        let public =
            JurisdictionPublicKeys::parse(&pairs.public_keys().to_file_text(), "pub").unwrap();
        let sealer = CallSealer::new(&public, &call("c1"), Jurisdiction::Tx).unwrap();
        assert_eq!(sealer.wrapped_key().as_bytes().len(), WRAPPED_V2_LEN);
        assert_eq!(sealer.wrapped_key().version(), WRAPPED_V2);
        let chunk = sealer.seal(0, b"audio");
        let custodian = LocalCustodian::new(pairs, KeyRing::new());
        let opener = CallOpener::new(
            &custodian,
            &call("c1"),
            Jurisdiction::Tx,
            sealer.wrapped_key(),
        )
        .unwrap();
        assert_eq!(opener.open(0, &chunk.bytes).unwrap(), b"audio");
        // Bound to the call and the jurisdiction.
        for (id, j) in [("c2", Jurisdiction::Tx), ("c1", Jurisdiction::Ca)] {
            assert!(matches!(
                custodian.unwrap(&call(id), j, sealer.wrapped_key()),
                Err(EnvelopeError::Authentication { .. })
            ));
        }
        // Another cluster's private keys open nothing.
        let stranger = LocalCustodian::new(
            JurisdictionKeyPairs::generate([Jurisdiction::Tx]).unwrap(),
            KeyRing::new(),
        );
        assert!(
            stranger
                .unwrap(&call("c1"), Jurisdiction::Tx, sealer.wrapped_key())
                .is_err()
        );
        // Every flipped byte is refused.
        let bytes = sealer.wrapped_key().as_bytes().to_vec();
        for i in [0, 1, 600, 1120, 1121, WRAPPED_V2_LEN - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            let result = WrappedDataKey::from_bytes(&bad)
                .and_then(|w| custodian.unwrap(&call("c1"), Jurisdiction::Tx, &w));
            assert!(result.is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn version_one_keys_open_with_the_old_keks_only_in_the_custodian() {
        let mut legacy = KeyRing::new();
        legacy.insert(
            Jurisdiction::Tx,
            crate::envelope::KeyEncryptionKey::from_bytes([3; 32]),
        );
        let old = CallSealer::new(&legacy, &call("old"), Jurisdiction::Tx).unwrap();
        assert_eq!(old.wrapped_key().version(), 1);
        let pairs = JurisdictionKeyPairs::generate([Jurisdiction::Tx]).unwrap();
        let without = LocalCustodian::new(
            JurisdictionKeyPairs::parse(&pairs.to_file_text(), "keys").unwrap(),
            KeyRing::new(),
        );
        assert!(matches!(
            without.unwrap(&call("old"), Jurisdiction::Tx, old.wrapped_key()),
            Err(EnvelopeError::NoKeyFor(Jurisdiction::Tx))
        ));
        let with = LocalCustodian::new(pairs, legacy);
        let key = with
            .unwrap(&call("old"), Jurisdiction::Tx, old.wrapped_key())
            .unwrap();
        let chunk = old.seal(1, b"before custody");
        assert_eq!(
            CallOpener::with_key(&call("old"), Jurisdiction::Tx, &key)
                .open(1, &chunk.bytes)
                .unwrap(),
            b"before custody"
        );
    }

    #[test]
    fn a_release_opens_only_with_its_recipient_for_its_access_and_call() {
        let key = DataKey::generate().unwrap();
        let asker = ReleaseKeyPair::generate().unwrap();
        let released =
            seal_release(&asker.public_key(), 7, Jurisdiction::Tx, &call("c1"), &key).unwrap();
        assert_eq!(released.len(), RELEASED_KEY_LEN);
        let opened = asker
            .open(7, Jurisdiction::Tx, &call("c1"), &released)
            .unwrap();
        assert_eq!(opened.as_bytes(), key.as_bytes());
        let other_node = ReleaseKeyPair::generate().unwrap();
        assert!(
            other_node
                .open(7, Jurisdiction::Tx, &call("c1"), &released)
                .is_err()
        );
        assert!(
            asker
                .open(8, Jurisdiction::Tx, &call("c1"), &released)
                .is_err()
        );
        assert!(
            asker
                .open(7, Jurisdiction::Tx, &call("c2"), &released)
                .is_err()
        );
        assert!(seal_release(b"short", 7, Jurisdiction::Tx, &call("c1"), &key).is_err());
    }

    #[test]
    fn key_files_round_trip_and_never_echo_keys() {
        let pairs = JurisdictionKeyPairs::generate([Jurisdiction::Bop]).unwrap();
        let text = pairs.to_file_text();
        let again = JurisdictionKeyPairs::parse(&text, "keys.toml").unwrap();
        assert_eq!(
            again.public_keys().to_file_text(),
            pairs.public_keys().to_file_text()
        );
        let seed = text.lines().nth(1).unwrap().split('"').nth(3).unwrap();
        let broken = text.replace(&seed[..62], "zz");
        let err = JurisdictionKeyPairs::parse(&broken, "keys.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keys.toml") && !err.contains(&seed[10..30]),
            "{err}"
        );
        assert!(!format!("{again:?}").contains(&seed[..16]));
        let public = pairs.public_keys().to_file_text();
        assert!(JurisdictionPublicKeys::parse(&public.replace("US-BOP", "US-XX"), "p").is_err());
    }
}
