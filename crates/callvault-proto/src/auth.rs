//! Bearer tokens on the wire: the client interceptor that sends one, and the server interceptor
//! that admits only cluster peers to the internal services (`Raft`, `MetaStore`, `BlobShard`).
//!
//! Peers prove membership with the cluster's shared peer token. Servers keep only its BLAKE3
//! hash and compare hashes in constant time, so neither the token nor timing leaks from them.

use std::fmt;
use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The gRPC metadata key that carries a bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// Shortest token accepted anywhere: tokens are random secrets, not passwords.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted, so a header cannot make a server hash without bound.
pub const MAX_TOKEN_LEN: usize = 512;

/// A channel whose every request carries a bearer token.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// A problem with a token's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct InvalidToken(&'static str);

fn check_token(token: &str) -> Result<(), InvalidToken> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(InvalidToken("shorter than 16 characters"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(InvalidToken("longer than 512 characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidToken(
            "only printable ASCII without spaces is allowed",
        ));
    }
    Ok(())
}

/// The cluster's shared peer token, or none (internal services then admit anyone). Debug output
/// never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PeerToken(Option<Arc<str>>);

impl fmt::Debug for PeerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "PeerToken(<redacted>)"
        } else {
            "PeerToken(none)"
        })
    }
}

impl PeerToken {
    /// A peer token; it must be a well-formed token.
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        check_token(token)?;
        Ok(PeerToken(Some(token.into())))
    }

    /// No peer token.
    pub fn none() -> Self {
        PeerToken(None)
    }

    /// Whether a token is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// What a client sends.
    pub fn bearer(&self) -> Bearer {
        match &self.0 {
            Some(token) => Bearer::new(token).expect("checked when made"),
            None => Bearer::none(),
        }
    }

    /// What a server checks.
    pub fn gate(&self) -> PeerGate {
        match &self.0 {
            Some(token) => PeerGate::new(token).expect("checked when made"),
            None => PeerGate::open(),
        }
    }
}

/// Client side: adds `authorization: Bearer <token>` to every request (or nothing, when built
/// with [`Bearer::none`]), and the current span's W3C trace context (see [`crate::trace_context`]).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// Sends `token` with every request.
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        check_token(token)?;
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| InvalidToken("not a valid header value"))?;
        value.set_sensitive(true);
        Ok(Bearer(Some(value)))
    }

    /// Sends no token (a cluster without a peer token).
    pub fn none() -> Self {
        Bearer(None)
    }

    /// Wraps `channel` so every request carries this token.
    pub fn channel(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, self.clone())
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        // Every client goes through this interceptor, so it also carries the trace context.
        crate::trace_context::inject(request.metadata_mut());
        Ok(request)
    }
}

/// The token a request carries, if any: `Ok(None)` without an `authorization` header, an error
/// for a header that is not a well-formed bearer token.
pub fn bearer_token<T>(request: &Request<T>) -> Result<Option<&str>, Status> {
    let Some(value) = request.metadata().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not ASCII"))?;
    let token = text
        .strip_prefix("Bearer ")
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
    check_token(token).map_err(|e| Status::unauthenticated(e.to_string()))?;
    Ok(Some(token))
}

/// The hash a server keeps of a token.
pub fn token_hash(token: &str) -> blake3::Hash {
    blake3::hash(token.as_bytes())
}

/// Server side: admits a request only if it carries the cluster's peer token. Without a peer
/// token configured ([`PeerGate::open`]) every request is admitted; nodes warn about that at
/// start-up.
#[derive(Clone)]
pub struct PeerGate(Option<Arc<blake3::Hash>>);

impl fmt::Debug for PeerGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "PeerGate(token)"
        } else {
            "PeerGate(open)"
        })
    }
}

impl PeerGate {
    /// Admits requests carrying `token`.
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        check_token(token)?;
        Ok(PeerGate(Some(Arc::new(token_hash(token)))))
    }

    /// Admits every request.
    pub fn open() -> Self {
        PeerGate(None)
    }

    /// Whether a token is required.
    pub fn is_open(&self) -> bool {
        self.0.is_none()
    }

    /// Checks one request's metadata.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.0 else {
            return Ok(());
        };
        match bearer_token(request)? {
            // blake3::Hash compares in constant time.
            Some(token) if token_hash(token) == **expected => Ok(()),
            Some(_) => Err(Status::permission_denied(
                "internal service: the token is not this cluster's peer token",
            )),
            None => Err(Status::unauthenticated(
                "internal service: cluster peers only (no peer token sent)",
            )),
        }
    }
}

impl Interceptor for PeerGate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "peer-token-0123456789abcdef";

    fn with(token: &Bearer) -> Request<()> {
        let mut bearer = token.clone();
        bearer.call(Request::new(())).unwrap()
    }

    #[test]
    fn the_gate_admits_only_the_peer_token() {
        let gate = PeerGate::new(TOKEN).unwrap();
        assert!(gate.check(&with(&Bearer::new(TOKEN).unwrap())).is_ok());
        let wrong = gate
            .check(&with(&Bearer::new("another-token-0123456789").unwrap()))
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::PermissionDenied);
        let missing = gate.check(&with(&Bearer::none())).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn an_open_gate_admits_everything() {
        assert!(PeerGate::open().check(&Request::new(())).is_ok());
    }

    #[test]
    fn malformed_headers_are_unauthenticated() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(
            bearer_token(&request).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        for bad in ["short", "has a space in the token text"] {
            assert!(Bearer::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let shown = format!("{:?}", Bearer::new(TOKEN).unwrap());
        assert!(!shown.contains(TOKEN));
    }
}
