//! Bearer tokens on the wire: the client interceptor that sends one, and how a server reads it.
//! Servers keep only BLAKE3 hashes of tokens and look them up by hash, so neither the token nor
//! timing leaks from them. Which internal caller a token (or a client certificate) proves is in
//! [`crate::identity`].

use std::fmt;

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

/// A channel whose every request carries a bearer token (and, for a principal holding a signing
/// key, a proof of each request: see [`crate::proof`]).
pub type AuthChannel = crate::proof::Signer<InterceptedService<Channel, Bearer>>;

/// A problem with a token's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct InvalidToken(&'static str);

pub(crate) fn check_token(token: &str) -> Result<(), InvalidToken> {
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

/// Client side: adds `authorization: Bearer <token>` to every request (or nothing, when built
/// with [`Bearer::none`]), any fixed headers it was given (an internal caller's role), and the
/// current span's W3C trace context (see [`crate::trace_context`]).
#[derive(Clone)]
pub struct Bearer {
    token: Option<MetadataValue<Ascii>>,
    headers: Vec<(&'static str, MetadataValue<Ascii>)>,
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.token.is_some() {
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
        Ok(Bearer {
            token: Some(value),
            headers: Vec::new(),
        })
    }

    /// Sends no token.
    pub fn none() -> Self {
        Bearer {
            token: None,
            headers: Vec::new(),
        }
    }

    /// Also sends `headers` with every request.
    pub fn with_headers(mut self, headers: Vec<(&'static str, MetadataValue<Ascii>)>) -> Self {
        self.headers = headers;
        self
    }

    /// Wraps `channel` so every request carries this token.
    pub fn channel(&self, channel: Channel) -> AuthChannel {
        crate::proof::Signer::new(InterceptedService::new(channel, self.clone()), None)
    }

    /// Wraps `channel` so every request carries this token and is signed with `key`.
    pub fn signed_channel(&self, channel: Channel, key: crate::proof::SigningKey) -> AuthChannel {
        crate::proof::Signer::new(InterceptedService::new(channel, self.clone()), Some(key))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.token {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        for (name, value) in &self.headers {
            request.metadata_mut().insert(*name, value.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "peer-token-0123456789abcdef";

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
