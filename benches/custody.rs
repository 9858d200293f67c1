//! What key custody costs, before and after, in the same run on the same machine: ingest calls/s
//! and audio MB/s (`callvault load` against a `callvault dev` cluster), and playback time to the
//! first audio byte, p50 and p99, over many playbacks of calls that cluster recorded.
//!
//! Each binary runs its own dev cluster (its own `callvault dev`, so each gets the configuration
//! and secrets it expects): `CALLVAULT_BIN` is the build under test, `CALLVAULT_BIN_BEFORE` an
//! older build to compare with (skipped when unset). Release builds, e.g.:
//!
//! ```sh
//! git worktree add /tmp/cv-before <commit before custody>
//! (cd /tmp/cv-before && cargo build --release --bin callvault) && cp $CARGO_TARGET_DIR/release/callvault /tmp/callvault-before
//! cargo build --release --bin callvault
//! CALLVAULT_BIN=$CARGO_TARGET_DIR/release/callvault CALLVAULT_BIN_BEFORE=/tmp/callvault-before \
//!     cargo bench -p callvault-benches --bench custody
//! ```
//! Environment: `CALLVAULT_BENCH_CALLS` (calls ingested, default 400), `CALLVAULT_BENCH_CONCURRENCY`
//! (default 16), `CALLVAULT_BENCH_PLAYBACKS` (default 200).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callvault_proto::auth::{AuthChannel, Bearer};
use callvault_proto::proof::SigningKey;
use callvault_proto::v1 as pb;
use callvault_tests::free_port;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One `callvault dev` cluster of `bin`, stopped when dropped.
struct Cluster {
    child: Child,
    dir: tempfile::TempDir,
    addrs: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Cluster {
    fn start(bin: &Path) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let blob: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let list = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let mut child = Command::new(bin)
            .args(["dev", "--dir"])
            .arg(dir.path())
            .args(["--ports", &list(&ports), "--blob-ports", &list(&blob)])
            // Playback quotas would stop the measurement, not the system.
            .env("CALLVAULT_PLAYBACK__CALLS_PER_HOUR", "100000000")
            .env("CALLVAULT_PLAYBACK__BYTES_PER_HOUR", "1000000000000000")
            .env("CALLVAULT_LOG", "warn")
            .current_dir(callvault_tests::repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("callvault dev starts");
        let stdout = child.stdout.take().expect("stdout");
        let deadline = Instant::now() + Duration::from_secs(180);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("dev output");
            if line.starts_with("ready.") {
                break;
            }
            assert!(Instant::now() < deadline, "the dev cluster did not come up");
        }
        Cluster {
            child,
            dir,
            addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        }
    }

    /// A dev variable from tokens.env (`PLATFORM_TOKEN`, `AGENCY_TX_KEY`, ...).
    fn var(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("tokens.env"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(&format!("CALLVAULT_DEV_{name}=")))
            .map(str::to_string)
    }

    /// A channel to node `i` as the dev principal `name`, signing when it has a key.
    fn channel(&self, i: usize, name: &str) -> AuthChannel {
        let token = self.var(&format!("{name}_TOKEN")).expect("a dev token");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addrs[i]))
            .expect("uri")
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        let bearer = Bearer::new(&token).expect("token");
        match self.var(&format!("{name}_KEY")) {
            Some(file) => bearer.signed_channel(
                channel,
                SigningKey::load(&PathBuf::from(file)).expect("principal key"),
            ),
            None => bearer.channel(channel),
        }
    }
}

struct Figures {
    calls_per_second: f64,
    audio_mb_per_second: f64,
    ttfb_p50: Duration,
    ttfb_p99: Duration,
    playbacks: usize,
}

fn ingest(bin: &Path, cluster: &Cluster, calls: usize, concurrency: usize) -> (f64, f64) {
    let out = Command::new(bin)
        .args(["load", "--json", "--attorney-share", "0"])
        .args(["--addr", &cluster.addrs[1]])
        .args(["--calls", &calls.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--jurisdictions", "US-TX"])
        .args(["--mean-seconds", "120"])
        .env(
            "CALLVAULT_TOKEN",
            cluster.var("PLATFORM_TOKEN").expect("platform token"),
        )
        .output()
        .expect("callvault load runs");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("load report: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    (
        report["calls_per_second"].as_f64().expect("calls/s"),
        report["audio_mb_per_second"].as_f64().expect("MB/s"),
    )
}

async fn recorded_calls(cluster: &Cluster, want: usize) -> Vec<String> {
    let mut query = pb::query_client::QueryClient::new(cluster.channel(0, "AGENCY_TX"));
    let page = query
        .list_calls(pb::ListCallsRequest {
            jurisdiction: "US-TX".into(),
            page_size: want.min(1000) as u32,
            ..Default::default()
        })
        .await
        .expect("list calls")
        .into_inner();
    page.calls
        .into_iter()
        .filter(|c| c.state == pb::CallState::Stored as i32)
        .map(|c| c.call_id)
        .collect()
}

/// Time from sending a playback request to the first audio byte, and the whole stream read.
async fn first_byte(
    content: &mut pb::content_client::ContentClient<AuthChannel>,
    call_id: &str,
) -> Duration {
    let started = Instant::now();
    let mut stream = content
        .playback(pb::PlaybackRequest {
            jurisdiction: "US-TX".into(),
            call_id: call_id.into(),
            case_number: "BENCH-1".into(),
            reason: "custody bench".into(),
        })
        .await
        .expect("playback")
        .into_inner();
    let mut first = None;
    while let Some(message) = stream.message().await.expect("audio") {
        if first.is_none() && matches!(message.part, Some(pb::playback_response::Part::Audio(_))) {
            first = Some(started.elapsed());
        }
    }
    first.expect("some audio")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(bin: &Path) -> Figures {
    let cluster = Cluster::start(bin);
    let calls = env_usize("CALLVAULT_BENCH_CALLS", 400);
    let (calls_per_second, audio_mb_per_second) = ingest(
        bin,
        &cluster,
        calls,
        env_usize("CALLVAULT_BENCH_CONCURRENCY", 16),
    );
    let ids = recorded_calls(&cluster, calls).await;
    assert!(!ids.is_empty(), "nothing was recorded");
    let playbacks = env_usize("CALLVAULT_BENCH_PLAYBACKS", 200);
    let mut content = pb::content_client::ContentClient::new(cluster.channel(2, "AGENCY_TX"))
        .max_decoding_message_size(callvault_proto::MAX_MESSAGE_BYTES);
    // One unmeasured playback opens the connections.
    first_byte(&mut content, &ids[0]).await;
    let mut times = Vec::with_capacity(playbacks);
    for i in 0..playbacks {
        times.push(first_byte(&mut content, &ids[i % ids.len()]).await);
    }
    times.sort();
    Figures {
        calls_per_second,
        audio_mb_per_second,
        ttfb_p50: percentile(&times, 0.5),
        ttfb_p99: percentile(&times, 0.99),
        playbacks,
    }
}

fn main() {
    let after = PathBuf::from(
        std::env::var("CALLVAULT_BIN")
            .unwrap_or_else(|_| callvault_tests::callvault_bin().display().to_string()),
    );
    let before = std::env::var_os("CALLVAULT_BIN_BEFORE").map(PathBuf::from);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut rows = Vec::new();
    for (label, bin) in before
        .iter()
        .map(|b| ("before", b))
        .chain(std::iter::once(("after", &after)))
    {
        let figures = runtime.block_on(measure(bin));
        rows.push((label, bin.clone(), figures));
    }
    println!(
        "{:<8} {:>9} {:>9} {:>12} {:>12} {:>10}  binary",
        "build", "calls/s", "MB/s", "ttfb p50", "ttfb p99", "playbacks"
    );
    for (label, bin, f) in rows {
        println!(
            "{label:<8} {:>9.1} {:>9.2} {:>10.2}ms {:>10.2}ms {:>10}  {}",
            f.calls_per_second,
            f.audio_mb_per_second,
            f.ttfb_p50.as_secs_f64() * 1000.0,
            f.ttfb_p99.as_secs_f64() * 1000.0,
            f.playbacks,
            bin.display()
        );
    }
}
