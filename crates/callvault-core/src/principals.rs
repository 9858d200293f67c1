//! The principals file: who may call the public APIs, in which role, for which jurisdictions.
//!
//! ```toml
//! [[principal]]
//! name = "tx-platform"
//! role = "platform"            # platform | agency | registry | auditor | operator
//! jurisdictions = ["US-TX"]    # or ["*"]; operators and auditors may leave it empty
//! token_blake3 = "…"           # 64 hex: `callvault token hash` of the token
//! agency = "tx-da"             # optional: its agency (holds); defaults to the name
//! elevated = false             # optional, agency only: may play back sealed calls
//! ```
//!
//! Parsing is pure (the node reads the file): every rule a principal must satisfy is checked
//! here, so the node only indexes the result by token hash.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::Deserialize;

use crate::jurisdiction::Jurisdiction;

/// Longest principal or agency name, in bytes.
pub const MAX_PRINCIPAL_NAME: usize = 256;

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

/// One principal of the file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalSpec {
    /// Its name, trimmed, as audit entries record it.
    pub name: String,
    /// What it is for.
    pub role: AccessRole,
    /// Where it may act.
    pub scope: Scope,
    /// Its agency (defaults to its name).
    pub agency: String,
    /// May play back sealed calls (agencies only).
    pub elevated: bool,
    /// BLAKE3 of its bearer token.
    pub token_blake3: [u8; 32],
}

/// Why a principals file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalsError {
    /// Not TOML of the expected shape.
    #[error("{0}")]
    Syntax(String),
    /// A principal breaks a rule.
    #[error("principal {name}: {reason}")]
    Principal {
        /// The principal's name as written.
        name: String,
        /// What is wrong.
        reason: String,
    },
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

/// Parses and checks principals-file text: names unique and 1 to [`MAX_PRINCIPAL_NAME`] bytes,
/// tokens unique, scopes that their roles need, elevation for agencies only.
pub fn parse_principals(text: &str) -> Result<Vec<PrincipalSpec>, PrincipalsError> {
    let file: PrincipalsFile =
        toml::from_str(text).map_err(|e| PrincipalsError::Syntax(e.to_string()))?;
    let mut names = BTreeSet::new();
    let mut tokens = HashSet::new();
    let mut specs = Vec::with_capacity(file.principal.len());
    for entry in file.principal {
        let spec = check_entry(entry)?;
        let refuse = |reason: &str| PrincipalsError::Principal {
            name: spec.name.clone(),
            reason: reason.into(),
        };
        if !names.insert(spec.name.clone()) {
            return Err(refuse("appears twice"));
        }
        if !tokens.insert(spec.token_blake3) {
            return Err(refuse("shares its token with another principal"));
        }
        specs.push(spec);
    }
    Ok(specs)
}

fn check_entry(entry: PrincipalEntry) -> Result<PrincipalSpec, PrincipalsError> {
    let refuse = |reason: String| PrincipalsError::Principal {
        name: entry.name.clone(),
        reason,
    };
    let name = entry.name.trim().to_string();
    if name.is_empty() || name.len() > MAX_PRINCIPAL_NAME {
        return Err(refuse(format!(
            "the name must be 1 to {MAX_PRINCIPAL_NAME} bytes"
        )));
    }
    let token_blake3 = parse_hex32(&entry.token_blake3)
        .ok_or_else(|| refuse("token_blake3 must be 64 hex".into()))?;
    let scope = if entry.jurisdictions.iter().any(|j| j == "*") {
        Scope::All
    } else {
        Scope::Only(
            entry
                .jurisdictions
                .iter()
                .map(|code| Jurisdiction::from_code(code))
                .collect::<Result<_, _>>()
                .map_err(|e| refuse(e.to_string()))?,
        )
    };
    let needs_scope = matches!(
        entry.role,
        AccessRole::Platform | AccessRole::Agency | AccessRole::Registry
    );
    if needs_scope && scope == Scope::Only(BTreeSet::new()) {
        return Err(refuse(format!("role {} needs jurisdictions", entry.role)));
    }
    let agency = entry
        .agency
        .as_deref()
        .map(|a| a.trim().to_string())
        .unwrap_or_else(|| name.clone());
    if agency.is_empty() || agency.len() > MAX_PRINCIPAL_NAME {
        return Err(refuse(format!(
            "agency must be 1 to {MAX_PRINCIPAL_NAME} bytes"
        )));
    }
    if entry.elevated && entry.role != AccessRole::Agency {
        return Err(refuse("only agency principals may be elevated".into()));
    }
    Ok(PrincipalSpec {
        name,
        role: entry.role,
        scope,
        agency,
        elevated: entry.elevated,
        token_blake3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "aa00000000000000000000000000000000000000000000000000000000000000";
    const HASH_B: &str = "bb00000000000000000000000000000000000000000000000000000000000000";

    fn principal(name: &str, role: &str, jurisdictions: &str, hash: &str) -> String {
        format!(
            "[[principal]]\nname = {name:?}\nrole = {role:?}\njurisdictions = {jurisdictions}\n\
             token_blake3 = {hash:?}\n"
        )
    }

    #[test]
    fn a_file_parses_into_checked_principals() {
        let text = principal(" tx-agency ", "agency", "[\"US-TX\"]", HASH_A)
            + &principal("ops", "operator", "[\"*\"]", HASH_B);
        let specs = parse_principals(&text).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].name, "tx-agency");
        assert_eq!(specs[0].agency, "tx-agency");
        assert_eq!(specs[0].scope, Scope::Only([Jurisdiction::Tx].into()));
        assert_eq!(specs[1].scope, Scope::All);
        assert_eq!(specs[1].token_blake3[0], 0xbb);
    }

    #[test]
    fn every_rule_refuses_its_breach() {
        let ok = principal("p", "agency", "[\"US-TX\"]", HASH_A);
        let bad = [
            ok.clone() + &ok.replace(HASH_A, HASH_B),
            ok.clone() + &principal("q", "agency", "[\"US-TX\"]", HASH_A),
            principal("p", "platform", "[]", HASH_A),
            principal("p", "agency", "[\"US-XX\"]", HASH_A),
            principal("p", "agency", "[\"US-TX\"]", "00"),
            principal("  ", "agency", "[\"US-TX\"]", HASH_A),
            principal("p", "wizard", "[\"US-TX\"]", HASH_A),
            principal("p", "operator", "[]", HASH_A) + "elevated = true\n",
            ok.clone() + "agency = \" \"\n",
            ok.clone() + "colour = \"blue\"\n",
        ];
        for text in &bad {
            assert!(parse_principals(text).is_err(), "accepted {text}");
        }
        let err = parse_principals(&principal("p", "platform", "[]", HASH_A)).unwrap_err();
        assert!(err.to_string().starts_with("principal p:"), "{err}");
    }
}
