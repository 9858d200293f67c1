//! Who the principals of the public APIs are: their roles, jurisdictions, agencies and signing
//! keys, from the principals file. Api nodes authenticate callers by token with it; the metadata
//! store checks with it that a command acting for a person carries that person's proof.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use callvault_core::Jurisdiction;
use callvault_proto::proof::PublicKey;
use serde::Deserialize;
use tonic::Status;

#[cfg(feature = "store")]
use crate::audit_service::AuditScope;
use crate::command::MAX_PRINCIPAL;

/// What a principal is for. Roles do not nest: an operator administers the cluster but reads no
/// call data; an agency reads its jurisdiction's calls but cannot ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessRole {
    /// A call platform: ingests calls for its jurisdictions.
    Platform,
    /// A state agency: queries its jurisdiction's calls and retention status, sets its policy.
    Agency,
    /// A privileged-number registry: registers attorney and other privileged numbers.
    Registry,
    /// An auditor: reads the audit log.
    Auditor,
    /// A cluster operator: membership and policies; never call data or content.
    Operator,
}

impl fmt::Display for AccessRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessRole::Platform => "platform",
            AccessRole::Agency => "agency",
            AccessRole::Registry => "registry",
            AccessRole::Auditor => "auditor",
            AccessRole::Operator => "operator",
        })
    }
}

/// The jurisdictions a principal acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every jurisdiction (`jurisdictions = ["*"]`).
    All,
    /// Only these.
    Only(BTreeSet<Jurisdiction>),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name, as audit entries record it.
    pub name: String,
    /// What it is for.
    pub role: AccessRole,
    /// Where it may act.
    pub scope: Scope,
    /// The agency it belongs to: a hold placed by any principal of an agency may be released
    /// by the agency's other principals. Defaults to the principal's name.
    pub agency: String,
    /// May play back sealed calls (to sensitive numbers); every such access raises an alert.
    pub elevated: bool,
    /// The key it signs its requests with; a principal without one can act only where no
    /// decision is made for a person (see `callvault_proto::proof`).
    pub public_key: Option<PublicKey>,
}

impl Principal {
    /// Whether this principal has `role` for `jurisdiction`.
    pub fn may(&self, role: AccessRole, jurisdiction: Jurisdiction) -> bool {
        self.role == role
            && match &self.scope {
                Scope::All => true,
                Scope::Only(set) => set.contains(&jurisdiction),
            }
    }

    /// `PERMISSION_DENIED` unless this principal has one of `roles`.
    pub fn require_role(&self, roles: &[AccessRole]) -> Result<(), Status> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let wanted: Vec<String> = roles.iter().map(ToString::to_string).collect();
        Err(Status::permission_denied(format!(
            "{} has role {}; this needs {}",
            self.name,
            self.role,
            wanted.join(" or ")
        )))
    }

    /// `PERMISSION_DENIED` unless this principal has `role` for `jurisdiction`. For requests about
    /// a jurisdiction as a whole; requests about one call use [`Principal::may`] and answer
    /// `NOT_FOUND`.
    pub fn require(&self, role: AccessRole, jurisdiction: Jurisdiction) -> Result<(), Status> {
        self.require_role(&[role])?;
        if self.may(role, jurisdiction) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "{} may not act for {}",
            self.name,
            jurisdiction.code()
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    #[serde(default)]
    principal: Vec<PrincipalEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    role: AccessRole,
    #[serde(default)]
    jurisdictions: Vec<String>,
    token_blake3: String,
    #[serde(default)]
    agency: Option<String>,
    #[serde(default)]
    elevated: bool,
    #[serde(default)]
    public_key: Option<String>,
}

// The audit service (and its scopes) is part of the store.
#[cfg(feature = "store")]
impl Principal {
    /// Which audit entries this principal may read. Auditors: every entry, unless the principals
    /// file names their jurisdictions, then those only (a state's own auditor). Agencies: their
    /// jurisdictions' entries, never cluster-wide ones. Anyone else: checkpoints and proofs only.
    pub fn audit_scope(&self) -> AuditScope {
        let jurisdictions = |scope: &Scope| match scope {
            Scope::All => Jurisdiction::ALL.iter().copied().collect(),
            Scope::Only(set) => set.clone(),
        };
        match (self.role, &self.scope) {
            (AccessRole::Auditor, Scope::All) => AuditScope::Everything,
            (AccessRole::Auditor, Scope::Only(set)) if set.is_empty() => AuditScope::Everything,
            (AccessRole::Auditor | AccessRole::Agency, scope) => {
                AuditScope::Jurisdictions(jurisdictions(scope))
            }
            _ => AuditScope::ProofsOnly,
        }
    }
}

/// A principals file that cannot be used. The message names the principal, never a token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrincipalsError(String);

fn bail(text: String) -> PrincipalsError {
    PrincipalsError(text)
}

/// 32 bytes from exactly 64 hex characters (token hashes, keys).
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The principals of one file, by token hash and by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Principals {
    by_hash: Arc<HashMap<[u8; 32], Arc<Principal>>>,
    by_name: Arc<HashMap<String, Arc<Principal>>>,
}

impl fmt::Debug for Principals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principals")
            .field("principals", &self.by_name.len())
            .finish()
    }
}

impl Principals {
    /// Loads a principals file:
    ///
    /// ```toml
    /// [[principal]]
    /// name = "tx-platform"
    /// role = "platform"            # platform | agency | registry | auditor | operator
    /// jurisdictions = ["US-TX"]    # or ["*"]; operators and auditors may leave it empty
    /// token_blake3 = "…"           # 64 hex: the BLAKE3 hash of the token
    /// public_key = "ed25519:…"     # the key its requests are signed with
    /// agency = "tx-da"             # optional: its agency (holds); defaults to the name
    /// elevated = false             # optional, agency only: may play back sealed calls
    /// ```
    pub fn load(path: &Path) -> Result<Self, PrincipalsError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            bail(format!(
                "cannot read principals file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|e| bail(format!("principals file {}: {e}", path.display())))
    }

    /// Parses principals-file text.
    pub fn parse(text: &str) -> Result<Self, PrincipalsError> {
        let file: PrincipalsFile = toml::from_str(text).map_err(|e| bail(e.to_string()))?;
        let mut by_hash = HashMap::new();
        let mut by_name = HashMap::new();
        for entry in file.principal {
            let (hash, principal) = entry.check()?;
            let principal = Arc::new(principal);
            let name = principal.name.clone();
            if by_name.insert(name.clone(), principal.clone()).is_some() {
                return Err(bail(format!("principal {name} appears twice")));
            }
            if by_hash.insert(hash, principal).is_some() {
                return Err(bail(format!(
                    "principal {name} shares its token with another principal"
                )));
            }
        }
        Ok(Principals {
            by_hash: Arc::new(by_hash),
            by_name: Arc::new(by_name),
        })
    }

    /// The principal a token hash belongs to.
    pub fn by_token_hash(&self, hash: &[u8; 32]) -> Option<&Arc<Principal>> {
        self.by_hash.get(hash)
    }

    /// The principal named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Principal>> {
        self.by_name.get(name)
    }

    /// Every principal with its token hash, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 32], &Arc<Principal>)> {
        self.by_hash.iter()
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl PrincipalEntry {
    fn check(self) -> Result<([u8; 32], Principal), PrincipalsError> {
        let name = self.name.trim().to_string();
        if name.is_empty() || name.len() > MAX_PRINCIPAL {
            return Err(bail(format!(
                "principal name {:?} must be 1 to 256 bytes",
                self.name
            )));
        }
        let hash = parse_hex32(&self.token_blake3)
            .ok_or_else(|| bail(format!("principal {name}: token_blake3 must be 64 hex")))?;
        let scope = if self.jurisdictions.iter().any(|j| j == "*") {
            Scope::All
        } else {
            Scope::Only(
                self.jurisdictions
                    .iter()
                    .map(|code| Jurisdiction::from_code(code))
                    .collect::<Result<_, _>>()
                    .map_err(|e| bail(format!("principal {name}: {e}")))?,
            )
        };
        let needs_scope = matches!(
            self.role,
            AccessRole::Platform | AccessRole::Agency | AccessRole::Registry
        );
        if needs_scope && scope == Scope::Only(BTreeSet::new()) {
            return Err(bail(format!(
                "principal {name}: role {} needs jurisdictions",
                self.role
            )));
        }
        let agency = self
            .agency
            .map(|a| a.trim().to_string())
            .unwrap_or_else(|| name.clone());
        if agency.is_empty() || agency.len() > MAX_PRINCIPAL {
            return Err(bail(format!(
                "principal {name}: agency must be 1 to 256 bytes"
            )));
        }
        if self.elevated && self.role != AccessRole::Agency {
            return Err(bail(format!(
                "principal {name}: only agency principals may be elevated"
            )));
        }
        let public_key = self
            .public_key
            .as_deref()
            .map(PublicKey::parse)
            .transpose()
            .map_err(|e| bail(format!("principal {name}: public_key: {e}")))?;
        Ok((
            hash,
            Principal {
                name,
                role: self.role,
                scope,
                agency,
                elevated: self.elevated,
                public_key,
            },
        ))
    }
}
