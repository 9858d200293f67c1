//! What callvault's fuzz targets check. Each target in `fuzz/fuzz_targets/` is one line that
//! calls a function of [`TARGETS`]; `tests/replay.rs` runs the same functions over every seed
//! corpus and every saved crash under the normal `cargo test`, so a stable toolchain replays
//! what nightly found.
//!
//! A check returns normally when the input is refused with an error or accepted correctly, and
//! panics when the code under test panicked, allocated without bound (see [`BoundedAllocator`])
//! or accepted something wrong: a decode that does not round-trip, a proof that verifies but is
//! not one, a stream the rules forbid.

pub mod audit;
pub mod ingest;
pub mod phone;
pub mod raft;
pub mod records;
pub mod snapshot;
pub mod toml_files;

use std::alloc::{GlobalAlloc, Layout, System};

/// One fuzz target: its name (the file in `fuzz/fuzz_targets/` and the folders under
/// `fuzz/corpus/` and `fuzz/regressions/`) and its check.
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// Checks one input; panics on a defect.
    pub check: fn(&[u8]),
}

/// Every fuzz target. A new target is a line here and a one-line file in `fuzz/fuzz_targets/`.
pub const TARGETS: &[Target] = &[
    Target {
        name: "command",
        check: records::command,
    },
    Target {
        name: "records",
        check: records::any_record,
    },
    Target {
        name: "raft_messages",
        check: raft::message,
    },
    Target {
        name: "snapshot",
        check: snapshot::unpack,
    },
    Target {
        name: "phone",
        check: phone::normalize,
    },
    Target {
        name: "ingest_stream",
        check: ingest::stream,
    },
    Target {
        name: "audit_notes",
        check: audit::notes,
    },
    Target {
        name: "audit_proofs",
        check: audit::proofs,
    },
    Target {
        name: "policy_file",
        check: toml_files::policy_file,
    },
    Target {
        name: "principals_file",
        check: toml_files::principals_file,
    },
];

/// The check of the target called `name`.
pub fn check(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|t| t.name == name).map(|t| t.check)
}

/// The largest single allocation a check may make. Inputs are at most a few MiB (the fuzzers
/// run with `-max_len`), and every decoder must bound what it allocates by its input or a fixed
/// limit, so anything larger is a length read from the input and trusted.
pub const MAX_ALLOCATION: usize = 64 << 20;

/// The system allocator, refusing any single allocation over [`MAX_ALLOCATION`]: the program then
/// aborts with "memory allocation of N bytes failed", which libFuzzer reports as a crash and
/// `cargo test` as a failed replay. Install it with `#[global_allocator]` in fuzz targets and
/// replay tests.
pub struct BoundedAllocator;

// SAFETY: every call is forwarded unchanged to `System`, except that over-large requests get the
// null pointer, which `GlobalAlloc` allows for any failed allocation.
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
