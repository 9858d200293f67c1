//! Who is calling an internal RPC. Every workload authenticates to its peers as its role
//! (`meta`, `blob`, `ingest`, `api`, `keys`), and one table, [`INTERNAL_RPCS`], says which role
//! may call which internal RPC; anything else is `PERMISSION_DENIED`. There is no shared peer
//! secret.
//!
//! A caller proves its role in one of two ways:
//! - a TLS client certificate, verified against the cluster's CA in the handshake, whose subject
//!   names the role in an organizational unit `callvault-<role>` (and the node in its common
//!   name). This is the way on Kubernetes: one certificate Secret per role. A certificate of a
//!   process with several roles names them in several units, or in one joined by `+`
//!   (`callvault-meta+blob+ingest+api`).
//! - the role's own bearer token, which servers know only by its BLAKE3 hash (the peers file).
//!   This is the way on a cluster without TLS, such as the dev cluster.
//!
//! A process that plays several roles (every role of a laptop cluster) holds a credential per
//! role and says which one a request acts as (`x-callvault-role`); a certificate naming several
//! roles proves each of them, a token exactly one.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};

use crate::auth::{Bearer, InvalidToken, token_hash};

/// The gRPC metadata key naming the role a request acts as.
pub const ROLE_HEADER: &str = "x-callvault-role";
/// The gRPC metadata key naming the calling node (for logs; proven only by a certificate).
pub const NODE_HEADER: &str = "x-callvault-node";
/// The organizational-unit prefix that names a role in a certificate's subject.
pub const CERT_ROLE_PREFIX: &str = "callvault-";

/// A workload's role among its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A metadata-store member: Raft, proposals, the lifecycle work.
    Meta,
    /// A blob shard: stores chunks, repairs its peers.
    Blob,
    /// The front door for call platforms: writes chunks, commits calls.
    Ingest,
    /// The query, admin and content APIs: reads chunk ids and chunks, asks keys for a release.
    Api,
    /// The holder of the jurisdictions' private keys: releases one data key per logged access.
    Keys,
}

impl Role {
    /// Every role, in table order.
    pub const ALL: [Role; 5] = [Role::Meta, Role::Blob, Role::Ingest, Role::Api, Role::Keys];

    /// The role's name in configuration, headers and certificates.
    pub fn name(self) -> &'static str {
        match self {
            Role::Meta => "meta",
            Role::Blob => "blob",
            Role::Ingest => "ingest",
            Role::Api => "api",
            Role::Keys => "keys",
        }
    }

    /// The role named `name`.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who may call one internal RPC.
#[derive(Debug, Clone, Copy)]
pub struct InternalRpc {
    /// The gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    /// The roles that may call it.
    pub roles: &'static [Role],
    /// Whether principals of the public APIs may call it too (the `Cluster` service: operators);
    /// a request without an internal credential then goes on to principal authentication.
    pub principals_too: bool,
}

const fn rpc(path: &'static str, roles: &'static [Role]) -> InternalRpc {
    InternalRpc {
        path,
        roles,
        principals_too: false,
    }
}

use Role::{Api, Blob, Ingest, Keys, Meta};

/// Which role may call which internal RPC. Meta members forward every `MetaStore` call to the
/// leader, so `meta` may call all of them; which commands each role may *propose* is a second
/// table, in the metadata store (`callvault_meta::authz`).
pub const INTERNAL_RPCS: &[InternalRpc] = &[
    rpc("/callvault.v1.Raft/AppendEntries", &[Meta]),
    rpc("/callvault.v1.Raft/Vote", &[Meta]),
    rpc("/callvault.v1.Raft/InstallSnapshot", &[Meta]),
    rpc(
        "/callvault.v1.MetaStore/Propose",
        &[Meta, Ingest, Api, Keys],
    ),
    rpc("/callvault.v1.MetaStore/ReadCall", &[Meta, Api]),
    rpc("/callvault.v1.MetaStore/ReadCounters", &[Meta, Api]),
    rpc("/callvault.v1.MetaStore/ReadStanding", &[Meta, Ingest]),
    rpc("/callvault.v1.MetaStore/ReadPolicy", &[Meta, Api]),
    rpc("/callvault.v1.MetaStore/ListCallRecords", &[Meta, Api]),
    rpc("/callvault.v1.MetaStore/ListRegistry", &[Meta, Api]),
    rpc("/callvault.v1.MetaStore/StateDigest", &[Meta]),
    // A live call's chunk ids; never key material.
    rpc("/callvault.v1.MetaStore/ReadContent", &[Meta, Api]),
    // Pending changes (the two-person rule) and the cluster clock: the api serves them, the keys
    // role re-checks approvals and deadlines with them.
    rpc("/callvault.v1.MetaStore/ReadChanges", &[Meta, Api, Keys]),
    rpc("/callvault.v1.MetaStore/ReadClock", &[Meta, Api, Keys]),
    rpc("/callvault.v1.BlobShard/PutChunk", &[Ingest, Blob]),
    rpc("/callvault.v1.BlobShard/GetChunk", &[Api, Blob]),
    rpc("/callvault.v1.BlobShard/HasChunks", &[Blob, Meta]),
    rpc("/callvault.v1.BlobShard/MarkDead", &[Meta]),
    rpc("/callvault.v1.BlobShard/Collect", &[Meta]),
    rpc("/callvault.v1.BlobShard/Status", &[Meta, Blob]),
    rpc("/callvault.v1.BlobShard/Shred", &[Meta]),
    // The leader's orphan sweep.
    rpc("/callvault.v1.BlobShard/ListOrphanCandidates", &[Meta]),
    rpc("/callvault.v1.BlobShard/RemoveOrphans", &[Meta]),
    // Members call each other's Cluster service (forwarding, joining); operators call it too.
    InternalRpc {
        path: "/callvault.v1.Cluster/Init",
        roles: &[Meta],
        principals_too: true,
    },
    InternalRpc {
        path: "/callvault.v1.Cluster/AddMember",
        roles: &[Meta],
        principals_too: true,
    },
    InternalRpc {
        path: "/callvault.v1.Cluster/RemoveMember",
        roles: &[Meta],
        principals_too: true,
    },
    InternalRpc {
        path: "/callvault.v1.Cluster/Status",
        roles: &[Meta],
        principals_too: true,
    },
    InternalRpc {
        path: "/callvault.v1.Cluster/ReadIndex",
        roles: &[Meta],
        principals_too: true,
    },
];

/// The internal RPCs of services whose every method must be in the table: a method added to one
/// of them without a row is refused to everyone, rather than open to anyone.
const INTERNAL_SERVICES: &[&str] = &[
    "/callvault.v1.Raft/",
    "/callvault.v1.MetaStore/",
    "/callvault.v1.BlobShard/",
    "/callvault.v1.Keys/",
    "/callvault.v1.Cluster/",
];

/// The table row of `path`, if it is an internal RPC.
pub fn internal_rpc(path: &str) -> Option<&'static InternalRpc> {
    INTERNAL_RPCS.iter().find(|r| r.path == path)
}

/// Whether `path` belongs to an internal service (listed in the table or not).
pub fn is_internal(path: &str) -> bool {
    INTERNAL_SERVICES.iter().any(|s| path.starts_with(s))
}

/// How a caller proved its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenBy {
    /// A verified TLS client certificate naming the role.
    Certificate,
    /// The role's bearer token.
    Token,
}

/// An authenticated internal caller, attached to the request's extensions by [`InternalGate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The role the request acts as.
    pub role: Role,
    /// The calling node: the certificate's common name, or what a token caller says.
    pub node: String,
    /// How the role was proven.
    pub proven_by: ProvenBy,
}

impl PeerIdentity {
    /// The identity [`InternalGate`] attached to `request`, if any.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerIdentity> {
        request.extensions().get::<PeerIdentity>()
    }
}

/// What a client presents: one role, this node's name, and the role's token (none when its TLS
/// client certificate proves the role). Debug output never shows the token.
#[derive(Clone, Default)]
pub struct Credential {
    role: Option<Role>,
    node: String,
    token: Option<Arc<str>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("role", &self.role)
            .field("node", &self.node)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credential {
    /// Acting as `role` from `node`, with the role's token if there is one.
    pub fn new(role: Role, node: &str, token: Option<&str>) -> Result<Self, InvalidToken> {
        if let Some(token) = token {
            crate::auth::check_token(token)?;
        }
        Ok(Credential {
            role: Some(role),
            node: node.to_string(),
            token: token.map(Into::into),
        })
    }

    /// No credential at all (for servers in [`PeerTable::open`] mode, in library tests).
    pub fn none() -> Self {
        Credential::default()
    }

    /// The role this credential acts as.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// The interceptor that adds it to every request.
    pub fn bearer(&self) -> Bearer {
        let mut headers: Vec<(&'static str, MetadataValue<Ascii>)> = Vec::new();
        if let Some(value) = self
            .role
            .and_then(|r| MetadataValue::try_from(r.name()).ok())
        {
            headers.push((ROLE_HEADER, value));
        }
        if let Ok(value) = MetadataValue::try_from(self.node.as_str()) {
            headers.push((NODE_HEADER, value));
        }
        match &self.token {
            Some(token) => Bearer::new(token).expect("checked when made"),
            None => Bearer::none(),
        }
        .with_headers(headers)
    }
}

/// The server side: which role tokens exist (by hash) and whether TLS client certificates are
/// checked. Cheap to clone.
#[derive(Clone, Default)]
pub struct PeerTable {
    by_hash: Arc<HashMap<[u8; 32], Role>>,
    open: bool,
}

impl fmt::Debug for PeerTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTable")
            .field("tokens", &self.by_hash.len())
            .field("open", &self.open)
            .finish()
    }
}

/// A peers table that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peers: {0}")]
pub struct PeerTableError(String);

impl PeerTable {
    /// Role tokens by the BLAKE3 hash of each. Two roles may not share a token.
    pub fn new(tokens: impl IntoIterator<Item = (Role, [u8; 32])>) -> Result<Self, PeerTableError> {
        let mut by_hash = HashMap::new();
        for (role, hash) in tokens {
            if let Some(other) = by_hash.insert(hash, role) {
                return Err(PeerTableError(format!(
                    "roles {other} and {role} share a token"
                )));
            }
        }
        Ok(PeerTable {
            by_hash: Arc::new(by_hash),
            open: false,
        })
    }

    /// No authentication at all: every request is taken for the role it names. For library
    /// tests of one component; a node never serves this way.
    pub fn open() -> Self {
        PeerTable {
            by_hash: Arc::default(),
            open: true,
        }
    }

    /// The role a token proves.
    fn token_role(&self, token: &str) -> Option<Role> {
        self.by_hash.get(token_hash(token).as_bytes()).copied()
    }

    /// The internal identity `parts` prove, if any; an error for a credential that is presented
    /// but does not hold.
    pub fn identify(&self, parts: &http::request::Parts) -> Result<Option<PeerIdentity>, Status> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let claimed = match header(ROLE_HEADER) {
            Some(name) => Some(Role::from_name(&name).ok_or_else(|| {
                Status::invalid_argument(format!("{ROLE_HEADER}: no role named {name:?}"))
            })?),
            None => None,
        };
        let node = header(NODE_HEADER).unwrap_or_default();
        if let Some(roles) = certificate_roles(parts)? {
            let role = match (claimed, roles.as_slice()) {
                (Some(role), _) if roles.contains(&role) => role,
                (Some(role), _) => {
                    return Err(Status::permission_denied(format!(
                        "the client certificate does not name role {role}"
                    )));
                }
                (None, [only]) => *only,
                (None, _) => {
                    return Err(Status::invalid_argument(format!(
                        "the client certificate names several roles: say which in {ROLE_HEADER}"
                    )));
                }
            };
            let node = certificate_common_name(parts).unwrap_or(node);
            return Ok(Some(PeerIdentity {
                role,
                node,
                proven_by: ProvenBy::Certificate,
            }));
        }
        let token = bearer(parts);
        if let Some(role) = token.and_then(|t| self.token_role(t)) {
            if claimed.is_some_and(|c| c != role) {
                return Err(Status::permission_denied(format!(
                    "the token is role {role}'s, not {}'s",
                    claimed.map(Role::name).unwrap_or_default()
                )));
            }
            return Ok(Some(PeerIdentity {
                role,
                node,
                proven_by: ProvenBy::Token,
            }));
        }
        if self.open {
            return Ok(claimed.map(|role| PeerIdentity {
                role,
                node,
                proven_by: ProvenBy::Token,
            }));
        }
        Ok(None)
    }
}

/// The bearer token of a request, if it carries a well-formed one.
fn bearer(parts: &http::request::Parts) -> Option<&str> {
    let text = parts
        .headers
        .get(crate::auth::AUTHORIZATION)?
        .to_str()
        .ok()?;
    text.strip_prefix("Bearer ")
}

/// The leaf certificate a TLS client presented (verified against the CA in the handshake).
fn client_leaf(parts: &http::request::Parts) -> Option<rustls_pki_types::CertificateDer<'static>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certs = parts
        .extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    certs.first().cloned()
}

/// The roles a client certificate names (`OU=callvault-<role>`), or `None` without one that
/// names any.
fn certificate_roles(parts: &http::request::Parts) -> Result<Option<Vec<Role>>, Status> {
    let Some(leaf) = client_leaf(parts) else {
        return Ok(None);
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    let mut roles = Vec::new();
    for unit in cert.subject().iter_organizational_unit() {
        let Some(names) = unit
            .as_str()
            .ok()
            .and_then(|u| u.strip_prefix(CERT_ROLE_PREFIX))
        else {
            continue;
        };
        for name in names.split('+') {
            match Role::from_name(name) {
                Some(role) => roles.push(role),
                None => {
                    return Err(Status::permission_denied(format!(
                        "the client certificate names an unknown role {name:?}"
                    )));
                }
            }
        }
    }
    // A certificate that names no role (a client's, or one issued before roles) proves none:
    // the request may still prove one with a token.
    Ok((!roles.is_empty()).then_some(roles))
}

fn certificate_common_name(parts: &http::request::Parts) -> Option<String> {
    let leaf = client_leaf(parts)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Decides one request: `Ok(Some(identity))` for an internal caller the table admits,
/// `Ok(None)` for a request that goes on to the public services' own authentication, `Err` for
/// a refusal.
pub fn admit(
    peers: &PeerTable,
    parts: &http::request::Parts,
) -> Result<Option<PeerIdentity>, Status> {
    let path = parts.uri.path();
    let identity = peers.identify(parts)?;
    if !is_internal(path) || peers.open {
        return Ok(identity);
    }
    let row = internal_rpc(path);
    match (&identity, row) {
        (Some(who), Some(row)) if row.roles.contains(&who.role) => Ok(identity),
        (Some(who), _) => Err(Status::permission_denied(format!(
            "role {} may not call {path}",
            who.role
        ))),
        (None, Some(row)) if row.principals_too => Ok(None),
        (None, _) => Err(Status::unauthenticated(format!(
            "{path} is internal: present a role's client certificate or token"
        ))),
    }
}

/// The tower layer of a server that serves internal RPCs: admits each request by
/// [`INTERNAL_RPCS`] and attaches the caller's [`PeerIdentity`].
#[derive(Clone, Debug)]
pub struct InternalGateLayer {
    peers: PeerTable,
}

impl InternalGateLayer {
    /// A gate knowing `peers`.
    pub fn new(peers: PeerTable) -> Self {
        InternalGateLayer { peers }
    }
}

impl<S> tower_layer::Layer<S> for InternalGateLayer {
    type Service = InternalGate<S>;

    fn layer(&self, inner: S) -> InternalGate<S> {
        InternalGate {
            inner,
            peers: self.peers.clone(),
        }
    }
}

/// See [`InternalGateLayer`].
#[derive(Clone, Debug)]
pub struct InternalGate<S> {
    inner: S,
    peers: PeerTable,
}

impl<S, B> tower_service::Service<http::Request<B>> for InternalGate<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        // A client cannot smuggle an identity in: only this gate attaches one.
        parts.extensions.remove::<PeerIdentity>();
        match admit(&self.peers, &parts) {
            Ok(identity) => {
                if let Some(identity) = identity {
                    parts.extensions.insert(identity);
                }
                Box::pin(self.inner.call(http::Request::from_parts(parts, body)))
            }
            Err(status) => {
                tracing::debug!(
                    path = parts.uri.path(),
                    "internal RPC refused: {}",
                    status.message()
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(format!("http://n{path}"));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    const INGEST: &str = "ingest-role-token-0123456789";
    const API: &str = "api-role-token-0123456789ab";

    fn table() -> PeerTable {
        PeerTable::new([
            (Role::Ingest, *token_hash(INGEST).as_bytes()),
            (Role::Api, *token_hash(API).as_bytes()),
        ])
        .unwrap()
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_role_token_admits_only_the_rows_that_name_its_role() {
        let peers = table();
        let put = request(
            "/callvault.v1.BlobShard/PutChunk",
            &[("authorization", &bearer(INGEST))],
        );
        assert_eq!(admit(&peers, &put).unwrap().unwrap().role, Role::Ingest);
        let get = request(
            "/callvault.v1.BlobShard/GetChunk",
            &[("authorization", &bearer(INGEST))],
        );
        assert_eq!(
            admit(&peers, &get).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let raft = request(
            "/callvault.v1.Raft/Vote",
            &[("authorization", &bearer(API))],
        );
        assert_eq!(
            admit(&peers, &raft).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn claiming_another_role_than_the_token_proves_is_refused() {
        let parts = request(
            "/callvault.v1.BlobShard/GetChunk",
            &[("authorization", &bearer(INGEST)), (ROLE_HEADER, "api")],
        );
        assert_eq!(
            admit(&table(), &parts).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn internal_rpcs_without_a_credential_are_unauthenticated_and_unknown_methods_refused() {
        let peers = table();
        let bare = request("/callvault.v1.MetaStore/Propose", &[(ROLE_HEADER, "meta")]);
        assert_eq!(
            admit(&peers, &bare).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let unknown = request(
            "/callvault.v1.MetaStore/Backdoor",
            &[("authorization", &bearer(API))],
        );
        assert_eq!(
            admit(&peers, &unknown).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        // Public services and the Cluster service without an internal credential go on to
        // principal authentication.
        let public = request(
            "/callvault.v1.Query/ListCalls",
            &[("authorization", &bearer("x".repeat(20).as_str()))],
        );
        assert_eq!(admit(&peers, &public).unwrap(), None);
        let cluster = request("/callvault.v1.Cluster/Status", &[]);
        assert_eq!(admit(&peers, &cluster).unwrap(), None);
        let cluster_as_api = request(
            "/callvault.v1.Cluster/Status",
            &[("authorization", &bearer(API))],
        );
        assert_eq!(
            admit(&peers, &cluster_as_api).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn every_row_is_an_internal_rpc_and_named_once() {
        let mut seen = std::collections::BTreeSet::new();
        for row in INTERNAL_RPCS {
            assert!(is_internal(row.path), "{}", row.path);
            assert!(seen.insert(row.path), "{} twice", row.path);
            assert!(!row.roles.is_empty(), "{}", row.path);
        }
    }

    #[test]
    fn two_roles_cannot_share_a_token() {
        let hash = *token_hash(INGEST).as_bytes();
        assert!(PeerTable::new([(Role::Ingest, hash), (Role::Api, hash)]).is_err());
    }
}
