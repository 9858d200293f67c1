//! The TOML files an operator hands a node: retention policies and principals.

use callvault_core::policy::parse_policy_file;
use callvault_core::principals::{AccessRole, Scope, parse_principals};

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// The `policy_file` target: the loader never panics, every policy it returns passes the rules
/// a policy must satisfy to be put in force, and an error names a line inside the file.
pub fn policy_file(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    match parse_policy_file("fuzz.toml", text) {
        Ok(policies) => {
            for (jurisdiction, policy) in policies.iter() {
                if let Err(violation) = policy.validate() {
                    panic!("{jurisdiction:?}: a loaded policy breaks a rule: {violation}");
                }
            }
        }
        Err(error) => {
            let lines = text.split('\n').count();
            assert!(
                (1..=lines).contains(&error.line),
                "error at line {} of a {lines}-line file: {error}",
                error.line
            );
        }
    }
}

/// The `principals_file` target: the loader never panics, and what it returns keeps the rules:
/// unique names and tokens, trimmed names within bounds, scopes for the roles that need them,
/// elevation for agencies only.
pub fn principals_file(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let Ok(principals) = parse_principals(text) else {
        return;
    };
    let mut names = std::collections::BTreeSet::new();
    let mut tokens = std::collections::BTreeSet::new();
    for p in &principals {
        assert!(names.insert(p.name.as_str()), "{} appears twice", p.name);
        assert!(tokens.insert(p.token_blake3), "{} shares a token", p.name);
        for name in [&p.name, &p.agency] {
            assert!(
                !name.is_empty() && name.len() <= 256 && name.trim() == name.as_str(),
                "name {name:?} is not trimmed and bounded"
            );
        }
        if matches!(
            p.role,
            AccessRole::Platform | AccessRole::Agency | AccessRole::Registry
        ) {
            assert_ne!(
                p.scope,
                Scope::Only(Default::default()),
                "{} has no scope",
                p.name
            );
        }
        assert!(
            !p.elevated || p.role == AccessRole::Agency,
            "{} elevated",
            p.name
        );
    }
}
