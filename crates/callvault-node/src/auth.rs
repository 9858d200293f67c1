//! Who is calling the public APIs, and what they may do.
//!
//! Every public request carries a bearer token. The node keeps only each token's BLAKE3 hash (in
//! the principals file), finds the principal it belongs to, and attaches it to the request; each
//! service then checks the principal's role and jurisdictions. A principal scoped to other
//! jurisdictions learns nothing about a call: the services answer `NOT_FOUND` exactly as for a
//! call that does not exist.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use callvault_meta::auth_failures::FailureKind;
use callvault_proto::auth::{bearer_token, token_hash};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::auth_failures::AuthFailureLog;

use callvault_meta::principal::Principals;
pub use callvault_meta::principal::{AccessRole, Principal, parse_hex32};

/// The principals of the public APIs, by token hash. Cheap to clone.
#[derive(Clone, Default)]
pub struct Authenticator {
    principals: Principals,
    /// Where failed authentications are counted for the audit log, if anywhere.
    failures: Option<AuthFailureLog>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("principals", &self.principals.len())
            .finish()
    }
}

impl Authenticator {
    /// Loads a principals file (see [`Principals::load`]).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(Self::from(Principals::load(path)?))
    }

    /// Parses principals-file text.
    #[cfg(test)]
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(Self::from(Principals::parse(text)?))
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.principals.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
    }

    /// Counts every failed authentication in `log`, for the audit log.
    pub fn with_failure_log(mut self, log: AuthFailureLog) -> Self {
        self.failures = Some(log);
        self
    }

    fn failed<T>(&self, request: &Request<T>, kind: FailureKind, hash: Option<&[u8; 32]>) {
        if let Some(log) = &self.failures {
            let peer = request.remote_addr().map(|a| a.ip());
            log.record(peer, kind, hash, crate::ingest::now());
        }
    }

    /// The principal a request's token belongs to. Failures are counted in the failure log.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Arc<Principal>, Status> {
        let token = match bearer_token(request) {
            Ok(Some(token)) => token,
            Ok(None) => {
                self.failed(request, FailureKind::MissingToken, None);
                return Err(Status::unauthenticated(
                    "send a bearer token: `authorization: Bearer <token>`",
                ));
            }
            Err(status) => {
                self.failed(request, FailureKind::MalformedToken, None);
                return Err(status);
            }
        };
        let hash = token_hash(token);
        match self.principals.by_token_hash(hash.as_bytes()) {
            Some(principal) => Ok(Arc::clone(principal)),
            None => {
                self.failed(request, FailureKind::UnknownToken, Some(hash.as_bytes()));
                Err(Status::unauthenticated("unknown token"))
            }
        }
    }
}

/// Attaches the caller's [`Principal`] to every request of a public service, or refuses it.
impl From<Principals> for Authenticator {
    fn from(principals: Principals) -> Self {
        Authenticator {
            principals,
            failures: None,
        }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = self.authenticate(&request)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// Admits only principals with one of `roles`, for services that know nothing of principals
/// (`Cluster` for operators, `Audit` for auditors).
#[derive(Clone, Debug)]
pub struct RoleGate {
    auth: Authenticator,
    roles: &'static [AccessRole],
}

impl Authenticator {
    /// An interceptor admitting only `roles`.
    pub fn requiring(&self, roles: &'static [AccessRole]) -> RoleGate {
        RoleGate {
            auth: self.clone(),
            roles,
        }
    }
}

impl Interceptor for RoleGate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = self.auth.authenticate(&request)?;
        principal.require_role(self.roles)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// Admits principals with one of `roles`, or metadata-store members (role `meta`, proven to the
/// internal gate): for the `Cluster` service, which members call on each other (a follower
/// forwards membership changes to the leader; a node joining by itself asks to be added). A
/// member can already append to the Raft log, so this grants it nothing more.
#[derive(Clone, Debug)]
pub struct RoleOrPeerGate {
    roles: RoleGate,
}

impl Authenticator {
    /// An interceptor admitting `roles` or the metadata store's members.
    pub fn requiring_or_peer(&self, roles: &'static [AccessRole]) -> RoleOrPeerGate {
        RoleOrPeerGate {
            roles: self.requiring(roles),
        }
    }
}

/// Admits every authenticated principal to the `Audit` service and attaches its
/// [`AuditScope`](callvault_meta::audit_service::AuditScope), which the service filters
/// entries by.
#[derive(Clone, Debug)]
pub struct AuditGate {
    auth: Authenticator,
}

impl Authenticator {
    /// The interceptor of the `Audit` service.
    pub fn audit_gate(&self) -> AuditGate {
        AuditGate { auth: self.clone() }
    }
}

impl Interceptor for AuditGate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = self.auth.authenticate(&request)?;
        request.extensions_mut().insert(principal.audit_scope());
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

impl Interceptor for RoleOrPeerGate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let member = callvault_proto::identity::PeerIdentity::of(&request)
            .is_some_and(|p| p.role == callvault_proto::identity::Role::Meta);
        if member {
            return Ok(request);
        }
        self.roles.call(request)
    }
}

/// The principal the [`Authenticator`] attached to `request`.
pub fn caller<T>(request: &Request<T>) -> Result<Arc<Principal>, Status> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| Status::internal("service mounted without authentication"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use callvault_core::Jurisdiction;
    use callvault_core::codec::VersionedRecord as _;
    use callvault_meta::audit_service::AuditScope;
    use callvault_proto::auth::Bearer;

    const TOKEN: &str = "tx-agency-token-0123456789";

    fn file() -> String {
        format!(
            "[[principal]]\nname = \"tx-agency\"\nrole = \"agency\"\njurisdictions = [\"US-TX\"]\n\
             token_blake3 = \"{}\"\n\
             [[principal]]\nname = \"ops\"\nrole = \"operator\"\n\
             token_blake3 = \"{}\"\n",
            token_hash(TOKEN).to_hex(),
            token_hash("operator-token-0123456789").to_hex(),
        )
    }

    fn request_with(token: &str) -> Request<()> {
        let mut bearer = Bearer::new(token).unwrap();
        bearer.call(Request::new(())).unwrap()
    }

    #[test]
    fn a_token_finds_its_principal_and_its_scope() {
        let mut auth = Authenticator::parse(&file()).unwrap();
        let request = auth.call(request_with(TOKEN)).unwrap();
        let who = caller(&request).unwrap();
        assert_eq!(who.name, "tx-agency");
        assert!(who.may(AccessRole::Agency, Jurisdiction::Tx));
        assert!(!who.may(AccessRole::Agency, Jurisdiction::Ok));
        assert!(!who.may(AccessRole::Platform, Jurisdiction::Tx));
        assert_eq!(
            who.require(AccessRole::Agency, Jurisdiction::Ca)
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn unknown_and_missing_tokens_are_unauthenticated() {
        let mut auth = Authenticator::parse(&file()).unwrap();
        let unknown = auth
            .call(request_with("not-a-known-token-123456"))
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        let missing = auth.call(Request::new(())).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn failed_authentications_are_counted_without_the_token() {
        let log = AuthFailureLog::new(callvault_core::UnixMillis(0));
        let mut auth = Authenticator::parse(&file())
            .unwrap()
            .with_failure_log(log.clone());
        auth.call(request_with(TOKEN)).unwrap();
        assert_eq!(
            log.take(1, callvault_core::UnixMillis(1)),
            None,
            "success is no failure"
        );
        let sprayed = "sprayed-token-0123456789abcdef";
        for _ in 0..3 {
            auth.call(request_with(sprayed)).unwrap_err();
        }
        auth.call(Request::new(())).unwrap_err();
        let mut malformed = Request::new(());
        malformed
            .metadata_mut()
            .insert("authorization", "Basic dXNlcg==".parse().unwrap());
        auth.call(malformed).unwrap_err();
        let report = log.take(1, callvault_core::UnixMillis(2)).unwrap();
        // In-process requests have no peer address; served ones carry the TCP peer's.
        assert_eq!(report.sources.len(), 1);
        let source = &report.sources[0];
        assert_eq!(
            (
                source.peer,
                source.unknown,
                source.missing,
                source.malformed
            ),
            (None, 3, 1, 1)
        );
        let hash = token_hash(sprayed);
        assert_eq!(
            source.token_hash_prefix.as_ref(),
            Some(&hash.as_bytes()[..4].try_into().unwrap())
        );
        assert_eq!(source.distinct_tokens, 1);
        let encoded = callvault_meta::Command::RecordAuthFailures(report).encode();
        assert!(
            !encoded
                .windows(sprayed.len())
                .any(|w| w == sprayed.as_bytes()),
            "the token itself never leaves the node"
        );
    }

    #[test]
    fn the_audit_gate_scopes_entries_by_role_and_jurisdiction() {
        let text = format!(
            "{}[[principal]]\nname = \"all-auditor\"\nrole = \"auditor\"\njurisdictions = [\"*\"]\n\
             token_blake3 = \"{}\"\n\
             [[principal]]\nname = \"ca-auditor\"\nrole = \"auditor\"\njurisdictions = [\"US-CA\"]\n\
             token_blake3 = \"{}\"\n",
            file(),
            token_hash("auditor-token-0123456789").to_hex(),
            token_hash("ca-auditor-token-0123456789").to_hex(),
        );
        let mut gate = Authenticator::parse(&text).unwrap().audit_gate();
        let scope = |gate: &mut AuditGate, token: &str| {
            AuditScope::of(&gate.call(request_with(token)).unwrap()).unwrap()
        };
        assert_eq!(
            scope(&mut gate, "auditor-token-0123456789"),
            AuditScope::Everything
        );
        assert_eq!(
            scope(&mut gate, "ca-auditor-token-0123456789"),
            AuditScope::Jurisdictions([Jurisdiction::Ca].into())
        );
        let agency = scope(&mut gate, TOKEN);
        assert_eq!(agency, AuditScope::Jurisdictions([Jurisdiction::Tx].into()));
        assert!(agency.sees(Some(Jurisdiction::Tx)));
        assert!(!agency.sees(Some(Jurisdiction::Ok)));
        assert!(!agency.sees(None), "cluster-wide entries are the auditors'");
        // An operator is admitted (checkpoints and proofs) but reads no entry.
        assert_eq!(
            scope(&mut gate, "operator-token-0123456789"),
            AuditScope::ProofsOnly
        );
        assert_eq!(
            gate.call(request_with("unknown-token-0123456789"))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn the_cluster_gate_admits_operators_and_members_only() {
        use callvault_proto::identity::{PeerIdentity, ProvenBy, Role};
        let auth = Authenticator::parse(&file()).unwrap();
        let mut gate = auth.requiring_or_peer(&[AccessRole::Operator]);
        let as_role = |role| {
            let mut request = Request::new(());
            request.extensions_mut().insert(PeerIdentity {
                role,
                node: "node-2".into(),
                proven_by: ProvenBy::Token,
            });
            request
        };
        assert!(gate.call(as_role(Role::Meta)).is_ok());
        // Another role's identity is no principal either.
        assert!(gate.call(as_role(Role::Api)).is_err());
        assert!(gate.call(request_with("operator-token-0123456789")).is_ok());
        let agency = gate.call(request_with(TOKEN)).unwrap_err();
        assert_eq!(agency.code(), tonic::Code::PermissionDenied);
        let unknown = gate
            .call(request_with("another-token-0123456789"))
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        assert!(gate.call(Request::new(())).is_err());
    }

    #[test]
    fn bad_files_are_refused_with_the_principal_named() {
        let twice = format!("{}{}", file(), file());
        assert!(Authenticator::parse(&twice).is_err());
        let unscoped = "[[principal]]\nname = \"p\"\nrole = \"platform\"\ntoken_blake3 = \"00\"\n";
        let err = format!("{:#}", Authenticator::parse(unscoped).unwrap_err());
        assert!(err.contains("principal p"), "{err}");
        let bad_code = file().replace("US-TX", "US-XX");
        assert!(Authenticator::parse(&bad_code).is_err());
    }
}
