//! Proofs of a person: a principal signs each request it sends, and the metadata store checks
//! the signature itself, so the api node in between cannot invent, borrow or replay a principal.
//!
//! A principal holds an Ed25519 key pair; its public half is in the principals file. The client
//! signs, for every request, a statement of the RPC's path, the BLAKE3 digest of the request
//! message, the time and a random nonce, and sends the signature in `x-callvault-proof`. The api
//! node forwards the request message and the proof with the command it proposes; meta verifies the
//! signature against the principal the command names, checks that the command is what the
//! request asked for, and refuses a nonce it has seen.
//!
//! The digest is over the request's protobuf encoding as prost writes it (fields in number
//! order, defaults left out, no unknown fields): the api node re-encodes the message it decoded,
//! so a client in another language must encode the same way.
//!
//! [`Signer`] is the client side, a tower layer under any generated client: it reads the single
//! message of a unary request, signs it and adds the header. Streaming requests (`Ingest`) pass
//! through unsigned: a platform's commit acts for the platform, not for a person.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use tonic::body::Body;
use zeroize::Zeroizing;

/// The gRPC metadata key carrying a request's proof: `v1.<time ms>.<nonce hex>.<signature b64>`.
pub const PROOF_HEADER: &str = "x-callvault-proof";
/// Length of a proof's nonce.
pub const NONCE_LEN: usize = 16;
/// Prefix of a public key in the principals file.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";
/// Prefix of a principal's private key file.
const PRIVATE_KEY_PREFIX: &str = "callvault-principal-key-v1:";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a principal signed for one request.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestProof {
    /// The request's time, Unix milliseconds, as the client read its clock.
    pub time_ms: i64,
    /// Random; a proof is accepted once.
    pub nonce: [u8; NONCE_LEN],
    /// Ed25519 over [`statement`].
    pub signature: [u8; 64],
}

impl fmt::Debug for RequestProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestProof")
            .field("time_ms", &self.time_ms)
            .field("nonce", &hex(&self.nonce))
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes a principal signs: a domain, the RPC path, the request digest, time and nonce,
/// each length-prefixed.
pub fn statement(path: &str, request: &[u8], time_ms: i64, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"callvault/request-proof/v1");
    for field in [
        path.as_bytes(),
        blake3::hash(request).as_bytes(),
        &time_ms.to_be_bytes(),
        nonce,
    ] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

impl RequestProof {
    /// The header value.
    pub fn to_header(&self) -> String {
        format!(
            "v1.{}.{}.{}",
            self.time_ms,
            hex(&self.nonce),
            BASE64.encode(self.signature)
        )
    }

    /// Parses a header value.
    pub fn from_header(value: &str) -> Result<Self, String> {
        let mut parts = value.split('.');
        let (Some("v1"), Some(time), Some(nonce), Some(signature), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(format!(
                "{PROOF_HEADER} is not `v1.<time>.<nonce>.<signature>`"
            ));
        };
        let time_ms = time
            .parse()
            .map_err(|_| format!("{PROOF_HEADER}: time is not a number"))?;
        let mut nonce_bytes = [0u8; NONCE_LEN];
        if nonce.len() != 2 * NONCE_LEN {
            return Err(format!(
                "{PROOF_HEADER}: the nonce is {NONCE_LEN} bytes of hex"
            ));
        }
        for (i, byte) in nonce_bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&nonce[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("{PROOF_HEADER}: the nonce is not hex"))?;
        }
        let signature: [u8; 64] = BASE64
            .decode(signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("{PROOF_HEADER}: the signature is not 64 bytes of base64"))?;
        Ok(RequestProof {
            time_ms,
            nonce: nonce_bytes,
            signature,
        })
    }

    /// The proof a request carries, if any.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Option<Self>, tonic::Status> {
        let Some(value) = request.metadata().get(PROOF_HEADER) else {
            return Ok(None);
        };
        let text = value
            .to_str()
            .map_err(|_| tonic::Status::unauthenticated(format!("{PROOF_HEADER} is not ASCII")))?;
        Self::from_header(text)
            .map(Some)
            .map_err(tonic::Status::unauthenticated)
    }

    /// Whether `public_key` signed this proof for `path` and `request`.
    pub fn verify(&self, public_key: &PublicKey, path: &str, request: &[u8]) -> bool {
        let statement = statement(path, request, self.time_ms, &self.nonce);
        UnparsedPublicKey::new(&ED25519, public_key.0)
            .verify(&statement, &self.signature)
            .is_ok()
    }
}

/// A principal's public key, as the principals file names it (`ed25519:<base64>`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses `ed25519:<base64 of 32 bytes>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or_else(|| format!("a public key is `{PUBLIC_KEY_PREFIX}<base64>`"))?;
        BASE64
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(PublicKey)
            .ok_or_else(|| "an Ed25519 public key is 32 bytes of base64".to_string())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", BASE64.encode(self.0))
    }
}

/// A principal's private signing key: an Ed25519 seed. Never printed; zeroized on drop.
#[derive(Clone)]
pub struct SigningKey {
    pair: Arc<Ed25519KeyPair>,
    seed: Arc<Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key())
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, String> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(seed.as_mut_slice())
            .map_err(|_| "the system random generator failed")?;
        Ok(Self::from_seed(&seed))
    }

    /// The key of a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SigningKey {
            pair: Arc::new(
                Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are a seed"),
            ),
            seed: Arc::new(Zeroizing::new(*seed)),
        }
    }

    /// The text of its key file (a secret: `callvault-principal-key-v1:<base64 seed>`).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{PRIVATE_KEY_PREFIX}{}\n",
            BASE64.encode(self.seed.as_slice())
        ))
    }

    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text
            .trim()
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or("not a callvault principal key file")?;
        let seed = Zeroizing::new(BASE64.decode(b64).map_err(|_| "the key is not base64")?);
        let seed: &[u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| "an Ed25519 seed is 32 bytes")?;
        Ok(Self::from_seed(seed))
    }

    /// Loads a key file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?,
        );
        Self::parse(&text).map_err(|e| format!("key file {}: {e}", path.display()))
    }

    /// Its public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(
            self.pair
                .public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        )
    }

    /// A proof for `request` to `path`, now, with a fresh nonce.
    pub fn prove(&self, path: &str, request: &[u8]) -> RequestProof {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random generator works");
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let statement = statement(path, request, time_ms, &nonce);
        let signature = self
            .pair
            .sign(&statement)
            .as_ref()
            .try_into()
            .expect("Ed25519 signatures are 64 bytes");
        RequestProof {
            time_ms,
            nonce,
            signature,
        }
    }
}

/// The one message of a unary request's body: a gRPC frame (uncompressed flag, length, bytes).
fn single_message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0 && rest.len() == 4 + len).then(|| &rest[4..])
}

/// Client side: signs every unary request with a principal's key (when it has one).
#[derive(Clone)]
pub struct Signer<S> {
    inner: S,
    key: Option<SigningKey>,
}

impl<S> Signer<S> {
    /// Signs what goes through `inner` with `key`; with `None`, passes everything through.
    pub fn new(inner: S, key: Option<SigningKey>) -> Self {
        Signer { inner, key }
    }
}

impl<S: fmt::Debug> fmt::Debug for Signer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("inner", &self.inner)
            .field("signs", &self.key.is_some())
            .finish()
    }
}

impl<S, R> tower_service::Service<http::Request<Body>> for Signer<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<R>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The inner service was made ready for this call: use it, leave a clone for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let key = match &self.key {
            Some(key) if !request.uri().path().starts_with("/callvault.v1.Ingest/") => key.clone(),
            _ => return Box::pin(async move { inner.call(request).await.map_err(Into::into) }),
        };
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            if let Some(message) = single_message(&bytes) {
                let proof = key.prove(parts.uri.path(), message);
                let value = http::HeaderValue::from_str(&proof.to_header())?;
                parts.headers.insert(PROOF_HEADER, value);
            }
            let body = Body::new(http_body_util::Full::new(bytes));
            inner
                .call(http::Request::from_parts(parts, body))
                .await
                .map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_for_its_key_path_and_request() {
        let key = SigningKey::generate().unwrap();
        let text = key.to_file_text();
        let again = SigningKey::parse(&text).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let proof = key.prove("/callvault.v1.Content/Playback", b"request");
        let parsed = RequestProof::from_header(&proof.to_header()).unwrap();
        assert_eq!(parsed, proof);
        let pk = key.public_key();
        assert!(parsed.verify(&pk, "/callvault.v1.Content/Playback", b"request"));
        assert!(!parsed.verify(&pk, "/callvault.v1.Admin/PlaceHold", b"request"));
        assert!(!parsed.verify(&pk, "/callvault.v1.Content/Playback", b"other"));
        let other = SigningKey::from_seed(&[7; 32]).public_key();
        assert!(!parsed.verify(&other, "/callvault.v1.Content/Playback", b"request"));
        let mut later = parsed.clone();
        later.time_ms += 1;
        assert!(!later.verify(&pk, "/callvault.v1.Content/Playback", b"request"));
        assert_eq!(PublicKey::parse(&pk.to_string()).unwrap(), pk);
        assert!(!format!("{key:?}").contains(&text[30..50]));
        assert!(SigningKey::parse(&text.replace("v1:", "v1:AA")).is_err());
    }

    #[test]
    fn malformed_headers_and_keys_are_refused() {
        for bad in [
            "",
            "v2.1.00.AA",
            "v1.x.00.AA",
            "v1.1.zz.AA",
            "v1.1.00112233445566778899aabbccddeeff.AA",
        ] {
            assert!(RequestProof::from_header(bad).is_err(), "{bad}");
        }
        assert!(PublicKey::parse("ed25519:AAAA").is_err());
        assert!(PublicKey::parse("rsa:AAAA").is_err());
        assert!(SigningKey::parse("not a key").is_err());
    }

    #[test]
    fn only_a_single_uncompressed_frame_is_a_message() {
        assert_eq!(single_message(&[0, 0, 0, 0, 2, 7, 8]), Some(&[7u8, 8][..]));
        assert_eq!(single_message(&[1, 0, 0, 0, 2, 7, 8]), None);
        assert_eq!(single_message(&[0, 0, 0, 0, 2, 7]), None);
        assert_eq!(single_message(&[0, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0]), None);
    }
}
