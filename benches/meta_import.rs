//! Metadata-store import throughput: committed calls/s into a 3-node cluster of real
//! `callvault serve` processes on loopback, beside etcd's own write benchmark
//! (`etcdctl check perf --load=l`) on a 3-member etcd cluster on loopback, in the same run.
//! Then a large import (1,000,000 calls by default) prints calls/s at the start and at the end,
//! and the state machine's on-disk bytes per call after a full compaction.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p callvault-benches --bench meta_import
//! ```
//! Environment: `CALLVAULT_BENCH_CALLS` (comparison import, default 100000),
//! `CALLVAULT_BENCH_LARGE` (large import, default 1000000; 0 skips it),
//! `CALLVAULT_BENCH_CLIENTS` (concurrent clients, default 64), `CALLVAULT_BIN`.
//! etcd comes from Debian's `etcd-server` and `etcd-client`; the bench installs them when run as
//! root and says why it skips the comparison otherwise.

mod fixtures;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use callvault_core::codec::VersionedRecord;
use callvault_core::policy::{PrivilegedRetention, RetentionPolicy};
use callvault_core::{Jurisdiction, UnixMillis};
use callvault_meta::{Command as MetaCommand, CommandResult};
use callvault_proto::v1 as pb;
use callvault_tests::{MetaCluster, free_port};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn commit(i: usize) -> MetaCommand {
    let jurisdiction = Jurisdiction::ALL[i % 8];
    let call_id = format!("{}-fac{:03}-{i:010}", jurisdiction.code(), i % 300);
    fixtures::realistic_commit(i, jurisdiction, &call_id)
}

fn policy(jurisdiction: Jurisdiction) -> MetaCommand {
    MetaCommand::PutPolicy {
        jurisdiction,
        policy: RetentionPolicy {
            recording_retention_days: 365,
            call_detail_retention_days: 1095,
            privileged_retention: PrivilegedRetention::CallDetail,
            hold_requires_review_date: true,
            hold_max_review_days: 365,
            sweep_interval_seconds: 30,
            source: "bench".into(),
            shortening_notice_seconds: 0,
        },
        expected_version: 0,
        principal: "operator".into(),
        at: UnixMillis(1_700_000_000_000),
    }
}

/// Imports calls `range` with `clients` concurrent clients talking to the leader, as ingest nodes
/// do once a follower has named it; returns the commit time of every 1% of the range, for rates
/// at the start and the end.
async fn import(
    cluster: &MetaCluster,
    range: std::ops::Range<usize>,
    clients: usize,
) -> Vec<(usize, Instant)> {
    let leader = cluster.leader().await;
    let next = Arc::new(AtomicUsize::new(range.start));
    let done = Arc::new(AtomicUsize::new(0));
    let marks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let step = (range.len() / 100).max(1);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut meta = cluster.nodes[(leader - 1) as usize].meta();
        let (next, done, marks, end) = (next.clone(), done.clone(), marks.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return;
                }
                let command = commit(i).encode();
                let response = meta
                    .propose(pb::ProposeRequest { command })
                    .await
                    .expect("proposal commits");
                let result = CommandResult::decode(&response.into_inner().result).unwrap();
                assert!(
                    matches!(result, CommandResult::CallCommitted { .. }),
                    "{result:?}"
                );
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    marks.lock().unwrap().push((n, Instant::now()));
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut marks = marks.lock().unwrap().clone();
    marks.sort();
    marks
}

fn rate(marks: &[(usize, Instant)], from: usize, to: usize) -> f64 {
    let (n0, t0) = marks[from];
    let (n1, t1) = marks[to];
    (n1 - n0) as f64 / (t1 - t0).as_secs_f64()
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// etcd's own write benchmark on a 3-member loopback cluster; `None` with the reason if etcd
/// is not available.
fn etcd_writes_per_second() -> Result<f64, String> {
    let have = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !(have("etcd") && have("etcdctl")) {
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
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
        if !ok || !have("etcd") {
            return Err("could not install etcd-server/etcd-client".into());
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut members: Vec<Child> = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let child = Command::new("etcd")
            .args([
                "--name",
                &format!("e{i}"),
                "--data-dir",
                dir.path().join(format!("e{i}")).to_str().unwrap(),
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
        members.push(child);
    }
    let endpoints: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("127.0.0.1:{c}"))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
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
    for mut m in members {
        let _ = m.kill();
        let _ = m.wait();
    }
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
        .ok_or_else(|| "no throughput line in etcdctl's output".into())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let calls = env_usize("CALLVAULT_BENCH_CALLS", 100_000);
    let large = env_usize("CALLVAULT_BENCH_LARGE", 1_000_000);
    let clients = env_usize("CALLVAULT_BENCH_CLIENTS", 64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut cluster = MetaCluster::start(3, "").await;
        for j in &Jurisdiction::ALL[..8] {
            let mut meta = cluster.nodes[0].meta();
            meta.propose(pb::ProposeRequest { command: policy(*j).encode() })
                .await
                .expect("policy");
        }
        let marks = import(&cluster, 0..calls, clients).await;
        let total = rate(&marks, 0, marks.len() - 1);
        println!("callvault: {calls} calls from {clients} clients into 3 nodes: {total:.0} committed calls/s");

        match etcd_writes_per_second() {
            Ok(etcd) => println!(
                "etcd (3 members, etcdctl check perf --load=l): {etcd:.0} writes/s; callvault/etcd = {:.1}x",
                total / etcd
            ),
            Err(why) => println!("etcd comparison skipped: {why}"),
        }

        if large > 0 {
            let marks = import(&cluster, calls..calls + large, clients).await;
            let n = marks.len() - 1;
            println!(
                "large import of {large} calls: {:.0} calls/s over the first 10%, {:.0} calls/s over the last 10%, {:.0} overall",
                rate(&marks, 0, n / 10),
                rate(&marks, n - n / 10, n),
                rate(&marks, 0, n)
            );
        }
        let imported = calls + large;
        let leader = cluster.leader().await;
        let dir = cluster.node(leader).data_dir();
        for node in &mut cluster.nodes {
            node.stop();
        }
        // Full compaction of the leader's state machine, then its size on disk.
        let sm = callvault_meta::StateMachineStore::open(&dir.join("meta")).expect("open state machine");
        let db = sm.db();
        for name in callvault_meta::keys::STATE_MACHINE_CFS {
            let cf = db.cf_handle(name).unwrap();
            db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        drop(db);
        drop(sm);
        let bytes = dir_size(&dir.join("meta/sm"));
        println!(
            "state machine after full compaction: {bytes} bytes for {imported} calls = {:.0} bytes/call (28 chunk ids = 896 of them)",
            bytes as f64 / imported as f64
        );
    });
}
