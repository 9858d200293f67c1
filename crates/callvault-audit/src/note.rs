//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys.
//!
//! A signed note is a text ending in a newline, a blank line, and one or more signature lines
//! `— <key name> <base64(4-byte key id || signature)>`. The key id is the first four bytes of
//! `SHA-256(key name || 0x0A || 0x01 || public key)`, big-endian. Verifier keys travel as
//! `<name>+<hex key id>+<base64(0x01 || public key)>` ("vkeys"), signer keys optionally as
//! `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`, the encodings of Go's
//! `golang.org/x/mod/sumdb/note`, which the tests check byte for byte.
//!
//! Parsing is strict and bounded: the size and the number of signature lines are capped before
//! any signature is decoded, control characters are refused, and base64 must be canonical.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::hash::sha256;

/// The largest signed note accepted, in bytes. A checkpoint with a few signatures is a few
/// hundred bytes.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// The most signature lines accepted on one note.
pub const MAX_SIGNATURES: usize = 16;
/// The longest key name, in bytes (the limit C2SP's binary formats give names).
pub const MAX_KEY_NAME: usize = 255;
/// The signature type byte of Ed25519 keys.
pub const ED25519_ALGORITHM: u8 = 0x01;

const SIGNATURE_PREFIX: &str = "\u{2014} ";
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// Why a key could not be made or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key names are non-empty, at most 255 bytes, without spaces, `+` or control characters.
    #[error("invalid key name: must be 1 to {MAX_KEY_NAME} bytes without whitespace or '+'")]
    BadName,
    /// An Ed25519 seed is 32 bytes.
    #[error("an Ed25519 signing key is a 32-byte seed, got {0} bytes")]
    BadSeedLength(usize),
    /// The encoded key does not have the expected shape.
    #[error("malformed encoded key: {0}")]
    Malformed(&'static str),
    /// Only Ed25519 (type 0x01) is supported.
    #[error("unsupported key type {0:#04x}")]
    UnsupportedAlgorithm(u8),
    /// The key id in the encoding is not the one the name and key give.
    #[error("key id {stated:08x} does not match the key (expected {derived:08x})")]
    KeyIdMismatch {
        /// The id written in the key.
        stated: u32,
        /// The id derived from name and public key.
        derived: u32,
    },
}

/// Why a note could not be signed, parsed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note is larger than [`MAX_NOTE_BYTES`].
    #[error("note is {len} bytes, over the limit of {MAX_NOTE_BYTES}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// A control character other than newline (a carriage return, a tab, a NUL).
    #[error("note contains a control character other than newline")]
    ControlCharacter,
    /// The text is empty or does not end in a newline.
    #[error("note text must be non-empty and end with a newline")]
    BadText,
    /// No blank line separates text and signatures, or no signature follows it.
    #[error("note has no signature block (a blank line followed by signature lines)")]
    MissingSignatures,
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    /// A signature line is malformed.
    #[error("signature line {line}: {reason}")]
    MalformedSignature {
        /// The line number within the signature block, from 1.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The pinned key signed the note twice.
    #[error("two signatures from key {name} ({key_id:08x})")]
    DuplicateSignature {
        /// The key name.
        name: String,
        /// The key id.
        key_id: u32,
    },
    /// A signature from the pinned key does not verify: the text was altered or the
    /// signature forged.
    #[error("signature from key {name} ({key_id:08x}) does not verify")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key id.
        key_id: u32,
    },
    /// No signature from the pinned key (other keys' signatures are ignored, as the spec says).
    #[error("note is not signed by key {name} ({key_id:08x})")]
    NotSignedByKey {
        /// The key name.
        name: String,
        /// The key id.
        key_id: u32,
    },
}

/// A validated key name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName(String);

impl KeyName {
    /// Checks a key name: non-empty, at most [`MAX_KEY_NAME`] bytes, no Unicode whitespace, no
    /// `+`, no control characters.
    pub fn new(name: &str) -> Result<KeyName, KeyError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_KEY_NAME
            && !name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '+');
        if ok {
            Ok(KeyName(name.to_owned()))
        } else {
            Err(KeyError::BadName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key id of an Ed25519 key: `SHA-256(name || 0x0A || 0x01 || public key)[..4]`, big-endian.
pub fn key_id(name: &KeyName, public_key: &[u8; 32]) -> u32 {
    let digest = sha256(&[name.0.as_bytes(), b"\n", &[ED25519_ALGORITHM], public_key]);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn parse_key_id(hex: &str) -> Result<u32, KeyError> {
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if hex.len() != 8 || !hex.chars().all(lower_hex) {
        return Err(KeyError::Malformed(
            "key id must be 8 lower-case hex digits",
        ));
    }
    u32::from_str_radix(hex, 16).map_err(|_| KeyError::Malformed("key id"))
}

/// Decodes `base64(0x01 || 32 bytes)`.
fn decode_typed_key(b64: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    if b64.len() > 64 {
        return Err(KeyError::Malformed("key data too long"));
    }
    let raw = Zeroizing::new(
        STANDARD
            .decode(b64)
            .map_err(|_| KeyError::Malformed("key data is not canonical base64"))?,
    );
    let (&algorithm, key) = raw
        .split_first()
        .ok_or(KeyError::Malformed("empty key data"))?;
    if algorithm != ED25519_ALGORITHM {
        return Err(KeyError::UnsupportedAlgorithm(algorithm));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    if key.len() != 32 {
        return Err(KeyError::Malformed("Ed25519 key data must be 32 bytes"));
    }
    out.copy_from_slice(key);
    Ok(out)
}

fn encode_typed_key(key: &[u8; 32]) -> String {
    let mut raw = Zeroizing::new([0u8; 33]);
    raw[0] = ED25519_ALGORITHM;
    raw[1..].copy_from_slice(key);
    STANDARD.encode(&raw[..])
}

/// Signs notes with one Ed25519 key.
pub struct NoteSigner {
    name: KeyName,
    key_id: u32,
    key: Ed25519KeyPair,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        write!(f, "NoteSigner({}+{:08x})", self.name, self.key_id)
    }
}

impl NoteSigner {
    /// A signer from a key name and a 32-byte Ed25519 seed (the private key as RFC 8032 defines
    /// it), as loaded from a secret store.
    pub fn from_seed(name: &str, seed: &[u8]) -> Result<NoteSigner, KeyError> {
        let name = KeyName::new(name)?;
        if seed.len() != 32 {
            return Err(KeyError::BadSeedLength(seed.len()));
        }
        let key = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| KeyError::Malformed("seed rejected"))?;
        let public: [u8; 32] = key
            .public_key()
            .as_ref()
            .try_into()
            .expect("Ed25519 public keys are 32 bytes");
        Ok(NoteSigner {
            key_id: key_id(&name, &public),
            name,
            key,
        })
    }

    /// A signer from Go's encoding, `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`. The
    /// id must match the key.
    pub fn from_encoded(skey: &str) -> Result<NoteSigner, KeyError> {
        let rest = skey
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or(KeyError::Malformed("missing PRIVATE+KEY+ prefix"))?;
        // Names and ids hold no '+', but base64 key data may: split off two fields only.
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Malformed("expected PRIVATE+KEY+name+id+data"));
        };
        let stated = parse_key_id(id)?;
        let seed = decode_typed_key(data)?;
        let signer = NoteSigner::from_seed(name, &seed[..])?;
        if signer.key_id != stated {
            return Err(KeyError::KeyIdMismatch {
                stated,
                derived: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The key name.
    pub fn name(&self) -> &KeyName {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier, to publish as a vkey.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key: self
                .key
                .public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        }
    }

    /// Signs `text` (non-empty, ending in a newline, no control characters but newlines) and
    /// returns the signed note: the text, a blank line, this key's signature line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(signature.as_ref());
        let note = format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(&blob)
        );
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge { len: note.len() });
        }
        Ok(note)
    }
}

/// Verifies notes against one pinned Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: KeyName,
    key_id: u32,
    public_key: [u8; 32],
}

impl NoteVerifier {
    /// Parses a vkey, `<name>+<hex id>+<base64(0x01 || public key)>`; the id must match.
    pub fn from_vkey(vkey: &str) -> Result<NoteVerifier, KeyError> {
        if vkey.len() > MAX_KEY_NAME + 80 {
            return Err(KeyError::Malformed("vkey too long"));
        }
        // Names and ids hold no '+', but base64 key data may: split off two fields only.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Malformed("expected name+id+data"));
        };
        let name = KeyName::new(name)?;
        let stated = parse_key_id(id)?;
        let public_key = *decode_typed_key(data)?;
        let derived = key_id(&name, &public_key);
        if derived != stated {
            return Err(KeyError::KeyIdMismatch { stated, derived });
        }
        Ok(NoteVerifier {
            name,
            key_id: derived,
            public_key,
        })
    }

    /// The vkey text to pin in an auditor's configuration.
    pub fn vkey(&self) -> String {
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_typed_key(&self.public_key)
        )
    }

    /// The key name.
    pub fn name(&self) -> &KeyName {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Parses `note` and checks it carries exactly one valid signature by this key; returns the
    /// signed text. Signatures by other keys are ignored (C2SP: verifiers ignore unknown keys),
    /// but a signature line claiming this key that does not verify fails the whole note.
    pub fn verify<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let parsed = parse(note)?;
        let mut found = false;
        for line in &parsed.signatures {
            if line.name != self.name.as_str() || line.key_id != self.key_id {
                continue;
            }
            if found {
                return Err(NoteError::DuplicateSignature {
                    name: self.name.0.clone(),
                    key_id: self.key_id,
                });
            }
            let valid = line.signature.len() == 64
                && UnparsedPublicKey::new(&ED25519, &self.public_key)
                    .verify(parsed.text.as_bytes(), &line.signature)
                    .is_ok();
            if !valid {
                return Err(NoteError::InvalidSignature {
                    name: self.name.0.clone(),
                    key_id: self.key_id,
                });
            }
            found = true;
        }
        if !found {
            return Err(NoteError::NotSignedByKey {
                name: self.name.0.clone(),
                key_id: self.key_id,
            });
        }
        Ok(parsed.text)
    }
}

/// One parsed signature line (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLine<'a> {
    /// The key name on the line.
    pub name: &'a str,
    /// The key id, from the first four signature bytes.
    pub key_id: u32,
    /// The signature bytes after the key id.
    pub signature: Vec<u8>,
}

/// A syntactically valid signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedNote<'a> {
    /// The signed text, final newline included.
    pub text: &'a str,
    /// The signature lines, in order.
    pub signatures: Vec<SignatureLine<'a>>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge { len: text.len() });
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::ControlCharacter);
    }
    if !text.ends_with('\n') {
        return Err(NoteError::BadText);
    }
    Ok(())
}

/// Parses a signed note without verifying any signature: bounded size, no control characters
/// but newlines, a text ending in a newline, a blank line, then 1 to [`MAX_SIGNATURES`]
/// well-formed signature lines each ending in a newline.
pub fn parse(note: &str) -> Result<ParsedNote<'_>, NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge { len: note.len() });
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::ControlCharacter);
    }
    // Signature lines never contain a blank line, so the last one ends the text.
    let split = note.rfind("\n\n").ok_or(NoteError::MissingSignatures)?;
    let text = &note[..=split];
    let block = &note[split + 2..];
    if block.is_empty() {
        return Err(NoteError::MissingSignatures);
    }
    let Some(block) = block.strip_suffix('\n') else {
        return Err(NoteError::MalformedSignature {
            line: block.split('\n').count(),
            reason: "does not end with a newline",
        });
    };
    if block.split('\n').count() > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures);
    }
    let signatures = block
        .split('\n')
        .enumerate()
        .map(|(i, line)| parse_signature_line(i + 1, line))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParsedNote { text, signatures })
}

fn parse_signature_line(line_no: usize, line: &str) -> Result<SignatureLine<'_>, NoteError> {
    let malformed = |reason| NoteError::MalformedSignature {
        line: line_no,
        reason,
    };
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(malformed("does not start with an em dash and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(malformed("no space between key name and signature"))?;
    KeyName::new(name).map_err(|_| malformed("invalid key name"))?;
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| malformed("signature is not canonical base64"))?;
    if raw.len() < 5 {
        return Err(malformed("signature shorter than a key id and one byte"));
    }
    let (id, signature) = raw.split_at(4);
    Ok(SignatureLine {
        name,
        key_id: u32::from_be_bytes(id.try_into().expect("4 bytes")),
        signature: signature.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of golang.org/x/mod/sumdb/note (note_test.go, TestSign/TestOpen), repeated in
    // Cloudflare's signed_note crate docs: a key, its vkey, a text and its signed note.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n\
                           \n\
                           \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn signer(name: &str, byte: u8) -> NoteSigner {
        NoteSigner::from_seed(name, &[byte; 32]).unwrap()
    }

    #[test]
    fn matches_go_sumdb_note_byte_for_byte() {
        let s = NoteSigner::from_encoded(GO_SKEY).unwrap();
        assert_eq!(s.key_id(), 0xc74f20a3);
        assert_eq!(s.verifier().vkey(), GO_VKEY);
        assert_eq!(s.sign(GO_TEXT).unwrap(), GO_NOTE);
        let v = NoteVerifier::from_vkey(GO_VKEY).unwrap();
        assert_eq!(v, s.verifier());
        assert_eq!(v.verify(GO_NOTE).unwrap(), GO_TEXT);
    }

    #[test]
    fn keys_with_wrong_ids_or_shapes_are_refused() {
        let bad_id = GO_VKEY.replace("c74f20a3", "c74f20a4");
        assert!(matches!(
            NoteVerifier::from_vkey(&bad_id),
            Err(KeyError::KeyIdMismatch { .. })
        ));
        assert!(NoteVerifier::from_vkey(&GO_VKEY.replace("c74f20a3", "C74F20A3")).is_err());
        assert!(NoteVerifier::from_vkey("PeterNeumann+c74f20a3").is_err());
        assert!(NoteVerifier::from_vkey(&format!("{GO_VKEY}+x")).is_err());
        assert!(NoteVerifier::from_vkey(&GO_VKEY.replace("+ARpc", "+AhpC")).is_err());
        assert_eq!(
            NoteSigner::from_seed("log", &[0; 31]).unwrap_err(),
            KeyError::BadSeedLength(31)
        );
        assert_eq!(
            NoteSigner::from_seed("a log", &[0; 32]).unwrap_err(),
            KeyError::BadName
        );
        assert_eq!(
            NoteSigner::from_seed("a+log", &[0; 32]).unwrap_err(),
            KeyError::BadName
        );
        assert!(NoteSigner::from_encoded(&GO_SKEY.replace("c74f20a3", "00000000")).is_err());
        // Debug output never shows the key.
        let s = NoteSigner::from_encoded(GO_SKEY).unwrap();
        assert_eq!(format!("{s:?}"), "NoteSigner(PeterNeumann+c74f20a3)");
    }

    #[test]
    fn a_note_signed_by_another_key_fails() {
        let ours = signer("callvault.example/audit", 1);
        let theirs = signer("callvault.example/audit", 2);
        let note = theirs.sign("hello\n").unwrap();
        assert!(matches!(
            ours.verifier().verify(&note),
            Err(NoteError::NotSignedByKey { .. })
        ));
        // Same name and a forged key id: the signature must still verify.
        let forged = note.replace(&note[note.rfind(' ').unwrap() + 1..], &{
            let line = &parse(&note).unwrap().signatures[0];
            let mut blob = ours.key_id().to_be_bytes().to_vec();
            blob.extend_from_slice(&line.signature);
            format!("{}\n", STANDARD.encode(blob))
        });
        assert!(matches!(
            ours.verifier().verify(&forged),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn other_keys_are_ignored_but_ours_must_verify() {
        let ours = signer("log", 1);
        let witness = signer("witness", 2);
        let note = ours.sign("body\n").unwrap();
        let cosigned = format!(
            "{note}{}",
            witness
                .sign("body\n")
                .unwrap()
                .split("\n\n")
                .nth(1)
                .unwrap()
        );
        assert_eq!(ours.verifier().verify(&cosigned).unwrap(), "body\n");
        assert_eq!(witness.verifier().verify(&cosigned).unwrap(), "body\n");
        // Our signature line twice is refused.
        let twice = format!("{note}{}", note.split("\n\n").nth(1).unwrap());
        assert!(matches!(
            ours.verifier().verify(&twice),
            Err(NoteError::DuplicateSignature { .. })
        ));
    }

    #[test]
    fn altered_text_fails() {
        let s = signer("log", 1);
        let note = s.sign("size 10\n").unwrap();
        let altered = note.replace("size 10", "size 11");
        assert!(matches!(
            s.verifier().verify(&altered),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn truncated_signatures_and_junk_fail() {
        let s = signer("log", 1);
        let v = s.verifier();
        let note = s.sign("body\n").unwrap();
        // Every truncation of the note fails, whatever the reason.
        for n in 0..note.len() {
            if note.is_char_boundary(n) {
                assert!(v.verify(&note[..n]).is_err(), "truncated to {n} bytes");
            }
        }
        // A signature shortened by whole base64 quanta still parses but cannot verify.
        let sig_start = note.rfind(' ').unwrap() + 1;
        let short = format!(
            "{}{}\n",
            &note[..sig_start],
            &note[sig_start..sig_start + 40]
        );
        assert!(matches!(
            v.verify(&short),
            Err(NoteError::InvalidSignature { .. })
        ));
        let junk_cases = [
            format!("{note}junk\n"),
            format!("{note}\n"),
            format!("{note}\u{2014} log\n"),
            format!("{note}\u{2014} log !!!!\n"),
            format!("{note}\u{2014} log AAAA\n"),
            note.replace('\n', "\r\n"),
            note.replace("body", "bo\tdy"),
            format!("{}x", note),
            note.replace(" log ", "  log "),
        ];
        for bad in &junk_cases {
            assert!(v.verify(bad).is_err(), "accepted {bad:?}");
        }
        assert!(matches!(
            v.verify(&format!("{note}junk\n")),
            Err(NoteError::MalformedSignature { line: 2, .. })
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let s = signer("log", 1);
        let v = s.verifier();
        let note = s.sign("body\n").unwrap();
        let sig_line = note.split("\n\n").nth(1).unwrap();
        let many = format!("{note}{}", sig_line.repeat(MAX_SIGNATURES));
        assert_eq!(v.verify(&many), Err(NoteError::TooManySignatures));
        let big = format!("{}\n", "x".repeat(MAX_NOTE_BYTES));
        assert!(matches!(s.sign(&big), Err(NoteError::TooLarge { .. })));
        assert!(matches!(
            v.verify(&format!("{big}{note}")),
            Err(NoteError::TooLarge { .. })
        ));
        assert_eq!(s.sign("no newline"), Err(NoteError::BadText));
        assert_eq!(s.sign(""), Err(NoteError::BadText));
        assert_eq!(v.verify("body\n"), Err(NoteError::MissingSignatures));
        assert_eq!(v.verify("body\n\n"), Err(NoteError::MissingSignatures));
    }
}
