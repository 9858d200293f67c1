//! Failpoints for the fault suite (`tests/chaos`): named places where a test can make the
//! process crash, to prove recovery from exactly there. Compiled in only with the `failpoints`
//! feature (the `fail` crate); in every other build [`failpoint!`](crate::failpoint) expands to
//! nothing.
//!
//! A test arms one with the `FAILPOINTS` variable of the process, in the `fail` crate's syntax:
//! `FAILPOINTS=shred-after-compact=return` makes the process log that it reached the failpoint
//! and abort there, as a power cut would stop it. Other `fail` actions (`sleep(500)`, `pause`,
//! `panic`) work as the crate documents.

/// Crashes the process at this point when the named failpoint is armed with `return`.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        if $crate::failpoints::armed($name) {
            $crate::failpoints::crash($name);
        }
    };
}

#[cfg(feature = "failpoints")]
pub use enabled::*;

#[cfg(feature = "failpoints")]
mod enabled {
    /// Reads `FAILPOINTS`; keep the value for the life of the process.
    pub fn setup() -> fail::FailScenario<'static> {
        fail::FailScenario::setup()
    }

    /// Whether `name` is armed with `return` (other actions run inside this call).
    pub fn armed(name: &str) -> bool {
        fail::eval(name, |_| ()).is_some()
    }

    /// Says so on stderr (the node's log), then aborts: no destructor, flush or sync runs.
    pub fn crash(name: &str) -> ! {
        eprintln!("failpoint {name} reached: aborting the process");
        std::process::abort()
    }
}
