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

/// Whether the named failpoint is armed with `return` here and now (e.g. `name=20%return`
/// fires one time in five); always false without the `failpoints` feature. For faults that are
/// not a crash, such as a reply lost on its way back.
#[macro_export]
macro_rules! failpoint_fires {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        let fires = $crate::failpoints::armed($name);
        #[cfg(not(feature = "failpoints"))]
        let fires = false;
        fires
    }};
}

#[cfg(feature = "failpoints")]
pub use enabled::*;

#[cfg(feature = "failpoints")]
mod enabled {
    /// Reads `FAILPOINTS`; keep the value for the life of the process.
    pub fn setup() -> fail::FailScenario<'static> {
        fail::FailScenario::setup()
    }

    /// Whether `name` is armed with `return` (other actions run inside this call); says so on
    /// stderr (the node's log) when it is.
    pub fn armed(name: &str) -> bool {
        let fires = fail::eval(name, |_| ()).is_some();
        if fires {
            eprintln!("failpoint {name} fired");
        }
        fires
    }

    /// Says so on stderr (the node's log), then aborts: no destructor, flush or sync runs.
    pub fn crash(name: &str) -> ! {
        eprintln!("failpoint {name} reached: aborting the process");
        std::process::abort()
    }
}
