//! Support for the integration tests: finding the `callvault` binary and running it.
//!
//! The tests here start real `callvault` processes. `cargo test --workspace` builds the binary
//! before any test runs (the `callvault-node` package has integration tests of its own, which makes
//! cargo build its binary); `CALLVAULT_BIN` overrides the path.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `callvault` binary under test.
pub fn callvault_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CALLVAULT_BIN") {
        return PathBuf::from(path);
    }
    // This test executable lives in <target>/<profile>/deps/; the binary in <target>/<profile>/.
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("callvault{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: run `cargo test --workspace` (which builds it) or set CALLVAULT_BIN",
        bin.display()
    );
    bin
}

/// The repository root, for files the tests read (policies, deploy manifests).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// Runs `callvault` with `args` to completion and returns its output.
pub fn run_callvault(args: &[&str]) -> Output {
    Command::new(callvault_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("callvault starts")
}
