//! The binary starts and describes itself. (Also makes `cargo test` build the `callvault` binary,
//! which the workspace's `tests/` crate runs.)

use std::process::Command;

#[test]
fn help_lists_the_subcommands() {
    let out = Command::new(env!("CARGO_BIN_EXE_callvault"))
        .arg("--help")
        .output()
        .expect("callvault runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("policy"), "{text}");
}
