//! The scale bench: millions of calls in a 3-node cluster of real `callvault serve` processes
//! (the `callvault dev` layout: meta, blob, ingest and api roles on each node), measured.
//!
//! 1. etcd's 3-member write rate (`etcdctl check perf --load=l`), before and after the import.
//! 2. The import: `CALLVAULT_SCALE_CALLS` calls (default 10,000,000) committed through the Raft
//!    leader by `CALLVAULT_SCALE_CLIENTS` concurrent proposers (default 64), as ingest nodes
//!    commit them; the commit rate of every tenth.
//! 3. At 100k, 1M and 10M stored calls (those the import reaches, and its end): p50 and p99 of
//!    `Query.JurisdictionStatus`, `Query.CallStatus` (a random stored call) and the first page of
//!    `Query.ListCalls`, `CALLVAULT_SCALE_SAMPLES` sequential requests each (default 1000).
//! 4. Each node's peak resident memory; then every node stops, its state machine and Raft log are
//!    compacted fully, and their bytes per call are reported, family by family.
//! 5. The nodes restart with the lifecycle workers on: every imported call is past its deadline,
//!    so the sweeper expires them. Expiries per second and bytes written (all three nodes'
//!    `write_bytes`) per expired call, over `CALLVAULT_SCALE_EXPIRE_SECONDS` (default 300).
//!
//! Results go to `CALLVAULT_SCALE_OUT` (default `<target>/scale-bench`): `scale.json`, `tenths.csv`
//! and `scale.md` (the table for `benches/README.md`); `benches/plot_scale.py` draws `scale.png`.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! CALLVAULT_SCALE_CALLS=1000000 cargo bench --workspace --bench scale
//! ```

mod etcd;
mod fixtures;
mod import;
mod venv;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callvault_core::codec::VersionedRecord;
use callvault_meta::{CommandResult, Refusal};
use callvault_proto::auth::AuthChannel;
use callvault_proto::v1 as pb;
use callvault_proto::v1::meta_store_client::MetaStoreClient;
use callvault_tests::{DevCluster, NodeProcess};

/// Stored-call counts at which the status reads are measured.
const CHECKPOINTS: [usize; 3] = [100_000, 1_000_000, 10_000_000];
/// The jurisdiction whose status the reads ask for (one of the eight imported).
const STATUS_JURISDICTION: usize = 6;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p50 and p99 of one read, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
}

fn percentiles(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// The three reads at one store size.
#[derive(Debug, Clone, Copy)]
struct Reads {
    stored: usize,
    status: Latency,
    call: Latency,
    list: Latency,
}

/// Times `samples` sequential requests of each read against node `node`, as the auditor.
async fn measure_reads(cluster: &DevCluster, node: u64, stored: usize, samples: usize) -> Reads {
    let mut query = cluster.query(node, cluster.token("auditor"));
    let code = import::jurisdiction_of(STATUS_JURISDICTION)
        .code()
        .to_string();
    let (mut status, mut call, mut list) = (Vec::new(), Vec::new(), Vec::new());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ stored as u64;
    for _ in 0..samples {
        let started = Instant::now();
        query
            .jurisdiction_status(pb::JurisdictionStatusRequest {
                jurisdiction: code.clone(),
            })
            .await
            .expect("JurisdictionStatus");
        status.push(started.elapsed());

        // A random stored call of the jurisdiction (xorshift: no dependency, same every run).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let k = (seed as usize) % (stored / import::JURISDICTIONS);
        let i = k * import::JURISDICTIONS + STATUS_JURISDICTION;
        let started = Instant::now();
        query
            .call_status(pb::CallStatusRequest {
                call_id: import::call_id(i),
                jurisdiction: code.clone(),
            })
            .await
            .expect("CallStatus");
        call.push(started.elapsed());

        let started = Instant::now();
        let page = query
            .list_calls(pb::ListCallsRequest {
                jurisdiction: code.clone(),
                ..Default::default()
            })
            .await
            .expect("ListCalls")
            .into_inner();
        list.push(started.elapsed());
        assert!(!page.calls.is_empty(), "the first page lists calls");
    }
    Reads {
        stored,
        status: percentiles(status),
        call: percentiles(call),
        list: percentiles(list),
    }
}

/// Where the import stops: every tenth's end and every checkpoint it reaches.
fn stops(calls: usize) -> Vec<usize> {
    let mut stops: Vec<usize> = (1..=10).map(|k| calls * k / 10).collect();
    stops.extend(CHECKPOINTS.iter().copied().filter(|c| *c < calls));
    stops.sort_unstable();
    stops.dedup();
    stops.retain(|s| *s > 0);
    stops
}

fn is_checkpoint(stored: usize, calls: usize) -> bool {
    CHECKPOINTS.contains(&stored) || stored == calls
}

/// The import's figures: each tenth's rate, the reads at each checkpoint.
struct Import {
    tenths: Vec<f64>,
    reads: Vec<Reads>,
    seconds: f64,
}

/// Puts the bench policy in force for each imported jurisdiction that `deploy/policies/default.toml`
/// leaves without one (a jurisdiction with a policy refuses it: expected version 0).
async fn ensure_policies(meta: &MetaStoreClient<AuthChannel>) {
    for j in &callvault_core::Jurisdiction::ALL[..import::JURISDICTIONS] {
        let response = meta
            .clone()
            .propose(pb::ProposeRequest {
                command: import::policy(*j).encode(),
            })
            .await
            .expect("policy proposal");
        let result = CommandResult::decode(&response.into_inner().result).expect("a result");
        assert!(
            matches!(
                result,
                CommandResult::PolicyPut { .. }
                    | CommandResult::Refused(Refusal::PolicyVersionMismatch { .. })
            ),
            "{j}: {result:?}"
        );
    }
}

async fn run_import(cluster: &DevCluster, calls: usize, clients: usize, samples: usize) -> Import {
    let leader = cluster.leader().await;
    // For profiling the import: `perf record -p <pid>` on the node that applies it first.
    eprintln!(
        "scale: node {leader} leads (pid {})",
        cluster.nodes[leader as usize - 1].pid().unwrap_or(0)
    );
    let meta = cluster.meta(leader);
    ensure_policies(&meta).await;
    let mut busy = [0.0f64; 10];
    let mut reads = Vec::new();
    let mut from = 0;
    let started = Instant::now();
    for stop in stops(calls) {
        let marks = import::import(&meta, from..stop, clients, (stop - from).max(1)).await;
        let seconds = (marks.last().unwrap().1 - marks[0].1).as_secs_f64();
        // A stop never crosses a tenth's end: the segment belongs to one tenth.
        let tenth = ((from * 10) / calls).min(9);
        busy[tenth] += seconds;
        eprintln!(
            "scale: {stop} calls stored ({:.0} calls/s over the last {} calls)",
            (stop - from) as f64 / seconds,
            stop - from
        );
        from = stop;
        if is_checkpoint(stop, calls) {
            let measured = measure_reads(cluster, leader, stop, samples).await;
            eprintln!("scale: reads at {stop}: {measured:?}");
            reads.push(measured);
        }
    }
    let tenths = busy
        .iter()
        .enumerate()
        .map(|(k, s)| (calls * (k + 1) / 10 - calls * k / 10) as f64 / s)
        .collect();
    Import {
        tenths,
        reads,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// A process's peak resident set (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes a process caused to be written to storage so far (`write_bytes` of /proc/pid/io).
fn written_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One node's bytes on disk after a full compaction, family by family.
struct Footprint {
    state_machine: Vec<(String, u64)>,
    raft_log: u64,
}

fn compact_node(node: &NodeProcess) -> Footprint {
    let meta = node.data_dir().join("meta");
    let state_machine = import::state_machine_footprint(&meta);
    import::compact_fully(&meta.join("raft-log"));
    Footprint {
        state_machine,
        raft_log: import::dir_size(&meta.join("raft-log")),
    }
}

/// Turns the lifecycle workers back on in a stopped node's config.
fn enable_lifecycle(node: &NodeProcess) {
    let path = node.config_path();
    let text = std::fs::read_to_string(path).expect("config");
    let text = text.replace(LIFECYCLE_OFF, "[lifecycle]\nenabled = true\n");
    std::fs::write(path, text).expect("config written");
}

const LIFECYCLE_OFF: &str = "[lifecycle]\nenabled = false\n";

/// Expiries across the imported jurisdictions, as the auditor sees them.
async fn expired(cluster: &DevCluster, node: u64) -> u64 {
    let mut query = cluster.query(node, cluster.token("auditor"));
    let mut total = 0;
    for j in &callvault_core::Jurisdiction::ALL[..import::JURISDICTIONS] {
        if let Ok(status) = query
            .jurisdiction_status(pb::JurisdictionStatusRequest {
                jurisdiction: j.code().into(),
            })
            .await
        {
            total += status.into_inner().expired;
        }
    }
    total
}

/// The sweep's figures.
struct Sweep {
    expired: u64,
    seconds: f64,
    written: u64,
}

async fn run_sweep(cluster: &mut DevCluster, calls: usize, window: Duration) -> Sweep {
    for node in &cluster.nodes {
        enable_lifecycle(node);
    }
    for node in &mut cluster.nodes {
        node.start();
    }
    let leader = cluster.leader().await;
    let pids: Vec<u32> = cluster.nodes.iter().filter_map(|n| n.pid()).collect();
    let before: u64 = pids.iter().map(|p| written_bytes(*p)).sum();
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < window && done < calls as u64 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        done = expired(cluster, leader).await;
        eprintln!(
            "scale: {done} expired after {:.0}s",
            started.elapsed().as_secs_f64()
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let written = pids.iter().map(|p| written_bytes(*p)).sum::<u64>() - before;
    Sweep {
        expired: done,
        seconds,
        written,
    }
}

fn out_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CALLVAULT_SCALE_OUT") {
        return PathBuf::from(dir);
    }
    // <target>/release/deps/scale-… → <target>/scale-bench
    let exe = std::env::current_exe().expect("bench path");
    exe.ancestors()
        .nth(3)
        .expect("<target>/<profile>/deps")
        .join("scale-bench")
}

struct Report {
    calls: usize,
    clients: usize,
    etcd: Vec<Result<f64, String>>,
    import: Import,
    rss: Vec<u64>,
    footprints: Vec<Footprint>,
    sweep: Sweep,
}

fn fmt_etcd(r: &Result<f64, String>) -> String {
    match r {
        Ok(v) => format!("{v:.0}"),
        Err(why) => format!("skipped ({why})"),
    }
}

impl Report {
    fn table(&self) -> String {
        let mut md = String::new();
        let etcd: Vec<f64> = self
            .etcd
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        let etcd_mean = (!etcd.is_empty()).then(|| etcd.iter().sum::<f64>() / etcd.len() as f64);
        let _ = writeln!(
            md,
            "{} calls, {} proposers, 3 nodes; import {:.0} s. etcd 3 members (`etcdctl check perf --load=l`): {} writes/s before, {} after.\n",
            self.calls,
            self.clients,
            self.import.seconds,
            fmt_etcd(&self.etcd[0]),
            fmt_etcd(&self.etcd[1]),
        );
        let _ = writeln!(
            md,
            "| tenth | calls stored at its end | commits/s | × etcd |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        for (k, r) in self.import.tenths.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {r:.0} | {} |",
                k + 1,
                self.calls * (k + 1) / 10,
                etcd_mean.map_or("–".into(), |e| format!("{:.2}", r / e)),
            );
        }
        let first = self.import.tenths[0];
        let last = self.import.tenths[9];
        let _ = writeln!(
            md,
            "\nLast tenth vs first: {:+.1}%.\n",
            (last / first - 1.0) * 100.0
        );
        let _ = writeln!(
            md,
            "| stored calls | JurisdictionStatus p50 / p99 ms | CallStatus p50 / p99 ms | ListCalls first page p50 / p99 ms |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        for r in &self.import.reads {
            let _ = writeln!(
                md,
                "| {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
                r.stored,
                r.status.p50,
                r.status.p99,
                r.call.p50,
                r.call.p99,
                r.list.p50,
                r.list.p99
            );
        }
        let _ = writeln!(
            md,
            "\n| node | peak RSS MiB | state machine bytes/call | Raft log bytes/call |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        for (k, (rss, f)) in self.rss.iter().zip(&self.footprints).enumerate() {
            let sm: u64 = f.state_machine.iter().map(|(_, b)| b).sum();
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.0} |",
                k + 1,
                *rss as f64 / (1 << 20) as f64,
                sm as f64 / self.calls as f64,
                f.raft_log as f64 / self.calls as f64
            );
        }
        let _ = writeln!(
            md,
            "\nState machine of node 1 by column family (bytes/call): {}.\n",
            self.footprints[0]
                .state_machine
                .iter()
                .filter(|(_, b)| *b as f64 / self.calls as f64 >= 0.5)
                .map(|(n, b)| format!("{n} {:.0}", *b as f64 / self.calls as f64))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let s = &self.sweep;
        let _ = writeln!(
            md,
            "Sweep at {} stored: {} expired in {:.0} s = {:.0} expiries/s; {:.0} bytes written per expired call (all three nodes).",
            self.calls,
            s.expired,
            s.seconds,
            s.expired as f64 / s.seconds,
            s.written as f64 / s.expired.max(1) as f64
        );
        md
    }

    fn json(&self) -> String {
        let reads: Vec<String> = self
            .import
            .reads
            .iter()
            .map(|r| {
                format!(
                    "{{\"stored\":{},\"status_p50_ms\":{:.3},\"status_p99_ms\":{:.3},\"call_p50_ms\":{:.3},\"call_p99_ms\":{:.3},\"list_p50_ms\":{:.3},\"list_p99_ms\":{:.3}}}",
                    r.stored, r.status.p50, r.status.p99, r.call.p50, r.call.p99, r.list.p50, r.list.p99
                )
            })
            .collect();
        let etcd: Vec<String> = self
            .etcd
            .iter()
            .map(|r| r.as_ref().map_or("null".into(), |v| format!("{v:.0}")))
            .collect();
        format!(
            "{{\"calls\":{},\"clients\":{},\"etcd_writes_per_s\":[{}],\"tenths_commits_per_s\":[{}],\"reads\":[{}],\"peak_rss_bytes\":[{}],\"expired\":{},\"sweep_seconds\":{:.1},\"sweep_bytes_written\":{}}}\n",
            self.calls,
            self.clients,
            etcd.join(","),
            self.import
                .tenths
                .iter()
                .map(|r| format!("{r:.1}"))
                .collect::<Vec<_>>()
                .join(","),
            reads.join(","),
            self.rss
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.sweep.expired,
            self.sweep.seconds,
            self.sweep.written
        )
    }

    fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("output dir");
        std::fs::write(dir.join("scale.md"), self.table()).expect("scale.md");
        std::fs::write(dir.join("scale.json"), self.json()).expect("scale.json");
        let mut csv = String::from("tenth,stored_at_end,commits_per_s\n");
        for (k, r) in self.import.tenths.iter().enumerate() {
            let _ = writeln!(csv, "{},{},{r:.1}", k + 1, self.calls * (k + 1) / 10);
        }
        std::fs::write(dir.join("tenths.csv"), csv).expect("tenths.csv");
    }
}

/// Draws `scale.png` beside `scale.json` with matplotlib from the benches' venv.
fn plot(dir: &Path) {
    let venv = venv::Venv::ensure();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plot_scale.py");
    let status = std::process::Command::new(venv.bin("python"))
        .arg(script)
        .arg(dir)
        .status()
        .expect("python");
    assert!(status.success(), "plot_scale.py failed");
}

fn main() {
    let calls = env_usize("CALLVAULT_SCALE_CALLS", 10_000_000).max(10 * import::JURISDICTIONS);
    let clients = env_usize("CALLVAULT_SCALE_CLIENTS", 64);
    let samples = env_usize("CALLVAULT_SCALE_SAMPLES", 1000).max(1);
    let window = Duration::from_secs(env_usize("CALLVAULT_SCALE_EXPIRE_SECONDS", 300) as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut etcd = vec![etcd::writes_per_second()];
    eprintln!("scale: etcd before: {}", fmt_etcd(&etcd[0]));
    let report = runtime.block_on(async {
        let (mut cluster, _permit) = DevCluster::start_with(LIFECYCLE_OFF).await;
        let import = run_import(&cluster, calls, clients, samples).await;
        etcd.push(etcd::writes_per_second());
        eprintln!("scale: etcd after: {}", fmt_etcd(&etcd[1]));
        let rss = cluster
            .nodes
            .iter()
            .map(|n| n.pid().map_or(0, peak_rss))
            .collect();
        for node in &mut cluster.nodes {
            assert!(node.stop(), "node {} stops cleanly", node.id);
        }
        let footprints = cluster.nodes.iter().map(compact_node).collect();
        let sweep = run_sweep(&mut cluster, calls, window).await;
        Report {
            calls,
            clients,
            etcd,
            import,
            rss,
            footprints,
            sweep,
        }
    });
    let dir = out_dir();
    report.write(&dir);
    print!("{}", report.table());
    plot(&dir);
    println!("written to {}", dir.display());
}
