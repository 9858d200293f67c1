//! One `callvault serve` process in its own network namespace, with the faults that act on a
//! process or its disk: kill -9 and restart, SIGSTOP/SIGCONT, a wiped volume, a full disk, a
//! skewed clock (libfaketime preloaded, its offset in a file the library re-reads), and
//! failpoints armed through the `FAILPOINTS` variable of the next start.

use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Size of each node's data volume (a tmpfs mount the disk-full fault fills).
const VOLUME_BYTES: u64 = 768 << 20;

/// Where libfaketime lives on Debian (`libfaketime` package, installed by scripts/chaos).
fn libfaketime() -> anyhow::Result<PathBuf> {
    for dir in std::fs::read_dir("/usr/lib")?.flatten() {
        let candidate = dir.path().join("faketime/libfaketime.so.1");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("libfaketime.so.1 not found under /usr/lib/*/faketime (scripts/chaos installs it)")
}

/// How a node process ended, when it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exit code.
    Code(i32),
    /// Killed by this signal (9: the harness's kill, 6: a failpoint's abort).
    Signal(i32),
}

/// One node: its namespace, config, volume, log and process.
pub struct Node {
    /// The node id (1-based).
    pub id: usize,
    /// Its gRPC address inside the namespaces.
    pub addr: String,
    ns: String,
    bin: PathBuf,
    config: PathBuf,
    volume: PathBuf,
    log: PathBuf,
    clock_file: PathBuf,
    child: Option<Child>,
    /// `FAILPOINTS` of the next start only.
    failpoints: Option<String>,
    /// How the last process ended, if it ended by itself (not by the harness).
    pub last_exit: Option<Exit>,
}

impl Node {
    /// A node whose config is written at `config`, with its volume mounted at `volume`.
    pub fn new(
        id: usize,
        addr: String,
        ns: String,
        bin: PathBuf,
        config: PathBuf,
        volume: PathBuf,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&volume)?;
        let size = format!("size={VOLUME_BYTES}");
        crate::net::run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &size,
                "tmpfs",
                &volume.to_string_lossy(),
            ],
        )?;
        let clock_file = log.with_extension("clock");
        std::fs::write(&clock_file, "+0\n")?;
        Ok(Node {
            id,
            addr,
            ns,
            bin,
            config,
            volume,
            log,
            clock_file,
            child: None,
            failpoints: None,
            last_exit: None,
        })
    }

    /// The data directory (the mounted volume).
    pub fn data_dir(&self) -> &Path {
        &self.volume
    }

    /// Arms failpoints (`name=action;…`, the `fail` crate's syntax) for the next start only.
    pub fn arm_failpoints(&mut self, spec: &str) {
        self.failpoints = Some(spec.to_string());
    }

    /// Starts the process inside its namespace, with libfaketime preloaded.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("node {} is already running", self.id);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let ns = crate::net::open_ns(&self.ns)?;
        let mut command = Command::new(&self.bin);
        command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CALLVAULT_LOG", "info,openraft=warn")
            .env("LD_PRELOAD", libfaketime()?)
            .env("FAKETIME_TIMESTAMP_FILE", &self.clock_file)
            // Re-read the offset every second; the monotonic clock stays true, as a skewed
            // wall clock leaves it.
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env_remove("FAILPOINTS")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null());
        if let Some(spec) = self.failpoints.take() {
            command.env("FAILPOINTS", spec);
        }
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; `ns` outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(command.spawn().context("cannot start callvault serve")?);
        self.last_exit = None;
        Ok(())
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        self.signal(libc::SIGCONT);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }

    /// Whether the process runs (checks whether it exited by itself, noting how).
    pub fn is_running(&mut self) -> bool {
        let Some(child) = &mut self.child else {
            return false;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.last_exit = Some(match status.signal() {
                    Some(signal) => Exit::Signal(signal),
                    None => Exit::Code(status.code().unwrap_or(-1)),
                });
                self.child = None;
                false
            }
            _ => true,
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return self.last_exit.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Deletes everything on the volume (the node must be stopped).
    pub fn wipe(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("wiping node {} while it runs", self.id);
        }
        for entry in std::fs::read_dir(&self.volume)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    fn filler(&self) -> PathBuf {
        self.volume.join("chaos-filler")
    }

    /// Fills the volume up to its last few KiB.
    pub fn fill_disk(&self) -> anyhow::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler())?;
        let block = vec![0u8; 1 << 20];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Whatever is left below a block goes too.
        let small = vec![0u8; 4096];
        while file.write(&small).is_ok_and(|n| n > 0) {}
        Ok(())
    }

    /// Frees what [`Node::fill_disk`] took.
    pub fn free_disk(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    /// Sets the node's wall-clock offset (libfaketime's syntax, e.g. `+2d`, `-90m`, `+0`).
    pub fn set_clock_offset(&self, offset: &str) -> anyhow::Result<()> {
        let tmp = self.clock_file.with_extension("clock.tmp");
        std::fs::write(&tmp, format!("{offset}\n"))?;
        std::fs::rename(tmp, &self.clock_file)?;
        Ok(())
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The node's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = crate::net::run("umount", &["-l", &self.volume.to_string_lossy()]);
    }
}
