//! The TOML files an operator hands a node: retention policies and principals.

use callvault_core::policy::parse_policy_file;
use callvault_meta::command::MAX_PRINCIPAL;
use callvault_meta::principal::{AccessRole, Principals, Scope};

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
/// one principal per name and per token, each findable both ways, trimmed names within bounds,
/// scopes for the roles that need them, elevation for agencies only.
pub fn principals_file(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let Ok(principals) = Principals::parse(text) else {
        return;
    };
    let mut count = 0;
    for (hash, p) in principals.iter() {
        count += 1;
        let by_name = principals.by_name(&p.name).expect("findable by name");
        assert_eq!(by_name, p, "{} is two principals", p.name);
        assert_eq!(principals.by_token_hash(hash), Some(p));
        for name in [&p.name, &p.agency] {
            assert!(
                !name.is_empty() && name.len() <= MAX_PRINCIPAL && name.trim() == name.as_str(),
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
    assert_eq!(
        count,
        principals.len(),
        "names and tokens disagree on the count"
    );
}
