//! etcd's own write benchmark (`etcdctl check perf`) on a 3-member etcd cluster on loopback: the
//! yardstick the metadata benches compare callvault's commit rate against, in the same run.
//! etcd comes from Debian's `etcd-server` and `etcd-client`; installed when run as root.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use callvault_tests::free_port;

fn have(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn ensure_installed() -> Result<(), String> {
    if have("etcd") && have("etcdctl") {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "etcd/etcdctl not installed and not root: apt-get install etcd-server etcd-client"
                .into(),
        );
    }
    eprintln!("installing etcd-server and etcd-client from Debian for the comparison");
    let ok = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok && have("etcd") {
        Ok(())
    } else {
        Err("could not install etcd-server/etcd-client".into())
    }
}

/// Three etcd members on loopback; killed when dropped.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for m in &mut self.0 {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

fn start_members(dir: &std::path::Path) -> Result<(Members, Vec<String>), String> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut members = Members(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        let data = dir.join(format!("e{i}"));
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("etcd: {e}"))?;
        members.0.push(child);
    }
    let endpoints = ports
        .iter()
        .map(|(c, _)| format!("127.0.0.1:{c}"))
        .collect();
    Ok((members, endpoints))
}

/// `etcdctl check perf --load=l` against a fresh 3-member loopback cluster: its writes/s, or why
/// the comparison could not run.
pub fn writes_per_second() -> Result<f64, String> {
    ensure_installed()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (members, endpoints) = start_members(dir.path())?;
    // On a loaded machine the members take more than a few seconds to elect a leader, and
    // `check perf` gives up on its first request if none has been elected yet.
    wait_until_healthy(&endpoints)?;
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoints.join(","),
            "check",
            "perf",
            "--load=l",
        ])
        .output();
    drop(members);
    let output = output.map_err(|e| format!("etcdctl: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    // Its progress bar is noise; keep the verdict lines.
    for line in text
        .lines()
        .filter(|l| l.contains("PASS") || l.contains("FAIL"))
    {
        eprintln!("etcdctl check perf --load=l: {line}");
    }
    // "PASS: Throughput is 12345 writes/s" or "FAIL: Throughput too low: 1234 writes/s"
    text.lines()
        .find(|l| l.contains("writes/s"))
        .and_then(|l| {
            l.split_whitespace()
                .rev()
                .nth(1)
                .and_then(|n| n.parse::<f64>().ok())
        })
        .ok_or_else(|| format!("no throughput line in etcdctl's output: {}", tail(&text)))
}

/// The last lines of `text`, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Waits up to a minute until every member answers `endpoint health`.
fn wait_until_healthy(endpoints: &[String]) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints.join(","), "endpoint", "health"])
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "etcd members not healthy after 60 s: {}",
                tail(&String::from_utf8_lossy(&output.stderr))
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
