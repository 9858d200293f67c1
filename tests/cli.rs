//! The `callvault` command line, run as a real process.

use callvault_tests::{repo_root, run_callvault};

#[test]
fn policy_check_summarizes_the_default_policy_file() {
    let out = run_callvault(&["policy", "check", "deploy/policies/default.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for code in ["US-AL", "US-TX", "US-WY", "US-DC", "US-BOP"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(code)),
            "{code} missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("52 jurisdictions, all valid"), "{stdout}");
    assert!(stdout.contains("every state, DC and US-BOP has a policy"));
}

#[test]
fn policy_check_names_the_line_and_field_of_a_broken_file() {
    let text = std::fs::read_to_string(repo_root().join("deploy/policies/default.toml")).unwrap();
    let needle = "[jurisdiction.\"US-TX\"]  # Texas\nrecording_retention_days = ";
    let start = text.find(needle).expect("default file has a Texas table") + needle.len();
    let end = start + text[start..].find('\n').unwrap();
    let broken = format!("{}0{}", &text[..start], &text[end..]);
    let line = broken[..start].lines().count();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, broken).unwrap();
    let out = run_callvault(&["policy", "check", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("broken.toml:{line}: "))
            && stderr.contains("jurisdiction.\"US-TX\".recording_retention_days"),
        "expected line {line} and the field in: {stderr}"
    );
}

#[test]
fn policy_check_of_a_missing_file_fails_clearly() {
    let out = run_callvault(&["policy", "check", "no/such/file.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read policy file"));
}
