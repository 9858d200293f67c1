//! Key custody in the state machine: an allowed content access becomes a grant waiting for its
//! key release, and the keys role releases it once.
//!
//! When `apply` decides a signed `RecordAccess` "allowed", it keeps a grant under the access
//! record's number: the call, the principal, the principal's signed request and the one-time
//! public key of the api node that asked. The keys role reads the grant, checks the signed
//! request itself, and proposes a [`KeyRelease`]; `apply` releases only a grant that exists, has
//! not been released, is recent, and whose call still has its data key, and logs every release
//! and every refusal. Only then does the keys role read the wrapped key, which no other role can.

#[cfg(feature = "store")]
use callvault_audit::AuditEvent;
use callvault_core::codec::{DecodeError, Reader, VersionedRecord, Writer};
use callvault_core::{CallId, Jurisdiction, UnixMillis};

use crate::command::{MAX_PRINCIPAL, MAX_TEXT};
use crate::principal_proof::PrincipalProof;
#[cfg(feature = "store")]
use crate::{
    apply::ApplyError,
    audit_log::{self, Event},
    command::{AccessRequest, CommandResult, MAX_WRAPPED_KEY},
    keys::{self, CF_CALLS, CF_KEYS},
    lifecycle,
    txn::Txn,
};
#[cfg(feature = "store")]
use callvault_core::CallRecord;

/// Grants of allowed accesses: `access record (u64 BE)` → [`AccessGrant`].
pub const CF_KEY_GRANTS: &str = "key_grants";
/// How long after its access a grant may be released.
pub const RELEASE_WINDOW_MS: i64 = 10 * 60_000;
/// Longest one-time public key a grant keeps (an X-Wing key is 1216 bytes).
pub const MAX_RECIPIENT: usize = 2048;
#[cfg_attr(not(feature = "store"), allow(dead_code))]
/// Grants older than the release window pruned per access recorded, so the family stays small.
const PRUNE_PER_APPLY: usize = 16;

/// A release of a grant, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The keys node that released it.
    pub keys_node: String,
    /// When.
    pub at: UnixMillis,
}

/// An allowed access waiting for (or past) its key release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    /// The call's jurisdiction.
    pub jurisdiction: Jurisdiction,
    /// The call.
    pub call_id: CallId,
    /// Who was allowed.
    pub principal: String,
    /// When the access was recorded.
    pub at: UnixMillis,
    /// The one-time public key the released key is sealed to.
    pub recipient: Vec<u8>,
    /// The principal's signed request, which the keys role checks itself.
    pub proof: PrincipalProof,
    /// Set once released.
    pub released: Option<Released>,
}

impl VersionedRecord for AccessGrant {
    const NAME: &'static str = "access grant";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u8(self.jurisdiction.index())
            .str(self.call_id.as_str())
            .str(&self.principal)
            .i64(self.at.0)
            .blob(&self.recipient)
            .blob(&self.proof.encode())
            .bool(self.released.is_some());
        if let Some(released) = &self.released {
            w.str(&released.keys_node).i64(released.at.0);
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let index = r.u8()?;
        let jurisdiction = Jurisdiction::from_index(index)
            .ok_or_else(|| r.invalid("jurisdiction", format!("unknown index {index}")))?;
        let id = r.str("call_id", callvault_core::call::MAX_CALL_ID_LEN)?;
        let call_id = CallId::new(&id).map_err(|e| r.invalid("call_id", e.to_string()))?;
        let grant = AccessGrant {
            jurisdiction,
            call_id,
            principal: r.str("principal", MAX_PRINCIPAL)?,
            at: UnixMillis(r.i64()?),
            recipient: r.blob("recipient", MAX_RECIPIENT)?,
            proof: PrincipalProof::decode(
                &r.blob("proof", crate::principal_proof::MAX_PROOF_BYTES)?,
            )?,
            released: if r.bool("released")? {
                Some(Released {
                    keys_node: r.str("keys_node", MAX_PRINCIPAL)?,
                    at: UnixMillis(r.i64()?),
                })
            } else {
                None
            },
        };
        r.finish()?;
        Ok(grant)
    }
}

/// What the keys role proposes to release one grant's key (tag 22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRelease {
    /// The access record.
    pub access: u64,
    /// The keys node proposing it.
    pub keys_node: String,
    /// Set when the keys role itself refuses (the signed request did not check out): recorded as
    /// a refusal, nothing is released.
    pub withheld: Option<String>,
    /// When (the keys node's clock).
    pub at: UnixMillis,
}

impl VersionedRecord for KeyRelease {
    const NAME: &'static str = "key release";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u64(self.access)
            .str(&self.keys_node)
            .bool(self.withheld.is_some())
            .str(self.withheld.as_deref().unwrap_or(""))
            .i64(self.at.0);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let release = KeyRelease {
            access: r.u64()?,
            keys_node: r.str("keys_node", MAX_PRINCIPAL)?,
            withheld: {
                let present = r.bool("withheld")?;
                let text = r.str("withheld", MAX_TEXT)?;
                present.then_some(text)
            },
            at: UnixMillis(r.i64()?),
        };
        r.finish()?;
        Ok(release)
    }
}

#[cfg(feature = "store")]
fn grant_key(access: u64) -> Vec<u8> {
    access.to_be_bytes().to_vec()
}

#[cfg(feature = "store")]
fn read_grant(txn: &Txn<'_>, access: u64) -> Result<Option<AccessGrant>, ApplyError> {
    match txn.get(CF_KEY_GRANTS, &grant_key(access))? {
        Some(bytes) => Ok(Some(AccessGrant::decode(&bytes)?)),
        None => Ok(None),
    }
}

#[cfg(feature = "store")]
/// Keeps the grant of an allowed, signed access (record `access`), and prunes a few expired ones.
pub(crate) fn open_grant(
    txn: &mut Txn<'_>,
    access: u64,
    request: &AccessRequest,
    proof: &PrincipalProof,
) -> Result<(), ApplyError> {
    prune(txn, UnixMillis(request.at.0 - RELEASE_WINDOW_MS))?;
    let Some(recipient) = &request.recipient else {
        return Ok(());
    };
    let grant = AccessGrant {
        jurisdiction: request.jurisdiction,
        call_id: request.call_id.clone(),
        principal: request.principal.clone(),
        at: request.at,
        recipient: recipient.clone(),
        proof: proof.clone(),
        released: None,
    };
    txn.put(CF_KEY_GRANTS, grant_key(access), grant.encode());
    Ok(())
}

#[cfg(feature = "store")]
/// Deletes the oldest grants recorded before `before` (a bounded number per call).
fn prune(txn: &mut Txn<'_>, before: UnixMillis) -> Result<(), ApplyError> {
    for key in txn.keys_with_prefix(CF_KEY_GRANTS, &[], PRUNE_PER_APPLY)? {
        let Some(bytes) = txn.get(CF_KEY_GRANTS, &key)? else {
            continue;
        };
        if AccessGrant::decode(&bytes)?.at >= before {
            break;
        }
        txn.delete(CF_KEY_GRANTS, key);
    }
    Ok(())
}

#[cfg(feature = "store")]
/// Why a grant cannot be released now, if it cannot.
fn refusal(
    txn: &Txn<'_>,
    release: &KeyRelease,
    grant: Option<&AccessGrant>,
) -> Result<Option<String>, ApplyError> {
    if let Some(reason) = &release.withheld {
        return Ok(Some(format!("withheld by the keys role: {reason}")));
    }
    let Some(grant) = grant else {
        return Ok(Some("no allowed access with that record".into()));
    };
    if grant.released.is_some() {
        return Ok(Some("already released once".into()));
    }
    if release.at.0 - grant.at.0 > RELEASE_WINDOW_MS {
        return Ok(Some("the access is older than the release window".into()));
    }
    let call_key = keys::call(grant.jurisdiction, &grant.call_id);
    let call = match txn.get(CF_CALLS, &call_key)? {
        Some(bytes) => Some(CallRecord::decode(&bytes)?),
        None => None,
    };
    let Some(call) = call.filter(CallRecord::content_readable) else {
        return Ok(Some("the call has no readable content".into()));
    };
    if txn.get(CF_KEYS, &call_key)?.is_none() || lifecycle::number_privileged(txn, &call)? {
        return Ok(Some("the call has no readable content".into()));
    }
    // The access was allowed before the deadline; the key is not released after it, though no
    // sweeper has expired the call yet (deadline at read, in cluster time).
    if lifecycle::past_deadline(txn, &call)? {
        return Ok(Some("the call is past its deadline".into()));
    }
    Ok(None)
}

#[cfg(feature = "store")]
/// `ReleaseKey`: releases a grant once, or refuses; either way one audit entry.
pub(crate) fn release(
    txn: &mut Txn<'_>,
    release: &KeyRelease,
) -> Result<CommandResult, ApplyError> {
    let grant = read_grant(txn, release.access)?;
    let refused = refusal(txn, release, grant.as_ref())?;
    let (jurisdiction, subject) = match &grant {
        Some(g) => (Some(g.jurisdiction), g.call_id.as_str().to_string()),
        None => (None, format!("access {}", release.access)),
    };
    let (event, outcome) = match &refused {
        None => (AuditEvent::KeyReleased, "released".to_string()),
        Some(reason) => (AuditEvent::KeyReleaseDenied, format!("denied: {reason}")),
    };
    audit_log::append(
        txn,
        Event {
            event,
            time: release.at,
            principal: format!("keys:{}", release.keys_node),
            jurisdiction,
            subject,
            outcome,
            details: vec![
                ("access_record", release.access.to_string()),
                (
                    "for",
                    grant
                        .as_ref()
                        .map(|g| g.principal.clone())
                        .unwrap_or_default(),
                ),
            ],
        },
    )?;
    if let (None, Some(mut grant)) = (&refused, grant) {
        grant.released = Some(Released {
            keys_node: release.keys_node.clone(),
            at: release.at,
        });
        txn.put(CF_KEY_GRANTS, grant_key(release.access), grant.encode());
    }
    Ok(CommandResult::KeyRelease { refused })
}

#[cfg(feature = "store")]
/// The grant of access `access`, if there is one (for the keys role).
pub fn grant(db: &rocksdb::DB, access: u64) -> Result<Option<AccessGrant>, ApplyError> {
    read_grant(&Txn::new(db), access)
}

#[cfg(feature = "store")]
/// The wrapped data key of a released grant's call, if the grant was released and the call
/// still has its key (for the keys role).
pub fn released_key(db: &rocksdb::DB, access: u64) -> Result<Option<Vec<u8>>, ApplyError> {
    let txn = Txn::new(db);
    let Some(grant) = read_grant(&txn, access)? else {
        return Ok(None);
    };
    if grant.released.is_none() {
        return Ok(None);
    }
    let key = txn.get(CF_KEYS, &keys::call(grant.jurisdiction, &grant.call_id))?;
    Ok(key.filter(|k| k.len() <= MAX_WRAPPED_KEY))
}
