//! Replays every seed corpus (`fuzz/corpus/<target>/`) and every input that once crashed a
//! fuzzer (`fuzz/regressions/<target>/`) through the target's check, on the stable toolchain,
//! under the same allocation bound as the fuzzers. Nightly and cargo-fuzz are not needed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use callvault_fuzz::TARGETS;

#[global_allocator]
static ALLOCATOR: callvault_fuzz::BoundedAllocator = callvault_fuzz::BoundedAllocator;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>`, sorted; none if the folder does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .map(|item| item.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every input of `kind`; returns the failures, each named by its file.
fn replay(kind: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for target in TARGETS {
        for path in inputs(kind, target.name) {
            let bytes = std::fs::read(&path).expect("a corpus file");
            if catch_unwind(AssertUnwindSafe(|| (target.check)(&bytes))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    failures
}

#[test]
fn every_seed_corpus_replays_without_a_defect() {
    let failures = replay("corpus");
    assert!(
        failures.is_empty(),
        "corpus inputs that fail: {failures:#?}"
    );
}

#[test]
fn every_input_that_once_crashed_a_fuzzer_is_handled() {
    let failures = replay("regressions");
    assert!(
        failures.is_empty(),
        "regressions that fail again: {failures:#?}"
    );
}

#[test]
fn every_target_has_a_libfuzzer_binary_and_a_seed_corpus() {
    for target in TARGETS {
        let binary = fuzz_dir()
            .join("fuzz_targets")
            .join(format!("{}.rs", target.name));
        assert!(binary.is_file(), "no {}", binary.display());
        assert!(
            !inputs("corpus", target.name).is_empty(),
            "target {} has no seed corpus",
            target.name
        );
    }
    let listed: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|item| {
            item.expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    for file in listed {
        let name = file.trim_end_matches(".rs");
        assert!(
            callvault_fuzz::check(name).is_some(),
            "fuzz/fuzz_targets/{file} is not in callvault_fuzz::TARGETS"
        );
    }
}
