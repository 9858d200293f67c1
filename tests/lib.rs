//! Support for the integration tests: finding the `callvault` binary, running it, and running
//! clusters of real `callvault serve` processes on loopback.
//!
//! `cargo test --workspace` builds the binary before any test runs (the `callvault-node` package
//! has integration tests of its own, which makes cargo build its binary); `CALLVAULT_BIN`
//! overrides the path.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use callvault_core::call::{CallId, CallRecord, Direction, Lifecycle};
use callvault_core::policy::{PrivilegedRetention, RetentionPolicy};
use callvault_core::{Jurisdiction, UnixMillis};
use callvault_meta::Command as MetaCommand;
use callvault_proto::v1 as pb;
use callvault_proto::v1::cluster_client::ClusterClient;
use callvault_proto::v1::meta_store_client::MetaStoreClient;
use tonic::transport::{Channel, Endpoint};

/// The `callvault` binary under test.
pub fn callvault_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CALLVAULT_BIN") {
        return PathBuf::from(path);
    }
    // This test executable lives in <target>/<profile>/deps/; the binary in <target>/<profile>/.
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("callvault{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: run `cargo test --workspace` (which builds it) or set CALLVAULT_BIN",
        bin.display()
    );
    bin
}

/// The repository root, for files the tests read (policies, deploy manifests).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// Runs `callvault` with `args` to completion and returns its output.
pub fn run_callvault(args: &[&str]) -> Output {
    Command::new(callvault_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("callvault starts")
}

/// A free TCP port on 127.0.0.1 (the OS picks it; it is free when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `callvault serve` process with its own data directory and port. Killed when dropped.
pub struct NodeProcess {
    /// The node id.
    pub id: u64,
    /// Its internal endpoint, `127.0.0.1:port`.
    pub addr: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Writes the config of a meta node under `dir`; `extra` is appended to it (TOML).
    pub fn new(dir: &Path, id: u64, extra: &str) -> Self {
        Self::with_roles(dir, id, &["meta"], extra)
    }

    /// Writes the config of a node with `roles` under `dir`; `extra` is appended (TOML).
    pub fn with_roles(dir: &Path, id: u64, roles: &[&str], extra: &str) -> Self {
        let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
        let roles = roles.join(", ");
        let addr = format!("127.0.0.1:{}", free_port());
        let data = dir.join(format!("node-{id}"));
        let config = dir.join(format!("node-{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "node_id = {id}\ndata_dir = {data:?}\nlisten_addr = \"{addr}\"\nroles = [{roles}]\n{extra}\n"
            ),
        )
        .expect("config written");
        NodeProcess {
            id,
            addr,
            config,
            log: dir.join(format!("node-{id}.log")),
            child: None,
        }
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.config.with_file_name(format!("node-{}", self.id))
    }

    /// Starts the process (output appended to its log file).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(callvault_bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CALLVAULT_LOG", "info,openraft=warn")
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("callvault serve starts");
        self.child = Some(child);
    }

    /// Kills the process with SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it to exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: sending a signal to a child process we own.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the process in the foreground until it exits (for start-up failures).
    pub fn run_to_exit(&self, timeout: Duration) -> Output {
        let mut child = Command::new(callvault_bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("callvault serve starts");
        let deadline = Instant::now() + timeout;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("output")
    }

    /// The node's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A channel to the node.
    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// The node's MetaStore client.
    pub fn meta(&self) -> MetaStoreClient<Channel> {
        MetaStoreClient::new(self.channel())
    }

    /// The node's Cluster client.
    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel())
    }

    /// The cluster status as this node sees it, or `None` if it does not answer.
    pub async fn status(&self) -> Option<pb::ClusterStatus> {
        self.cluster()
            .status(pb::StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A metadata-store cluster of real processes in a temporary directory.
pub struct MetaCluster {
    /// The members, by position (node id = position + 1).
    pub nodes: Vec<NodeProcess>,
    _dir: tempfile::TempDir,
}

impl MetaCluster {
    /// Starts `size` nodes, initializes the first and adds the others as voters. `extra` TOML is
    /// appended to every node's config.
    pub async fn start(size: u64, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes: Vec<NodeProcess> = (1..=size)
            .map(|id| NodeProcess::new(dir.path(), id, extra))
            .collect();
        for node in &mut nodes {
            node.start();
        }
        let first = &nodes[0];
        eventually("node 1 to answer", Duration::from_secs(30), || {
            first.status()
        })
        .await;
        first
            .cluster()
            .init(pb::InitRequest {})
            .await
            .expect("cluster init");
        for node in &nodes[1..] {
            eventually("a new node to answer", Duration::from_secs(30), || {
                node.status()
            })
            .await;
            first
                .cluster()
                .add_member(pb::AddMemberRequest {
                    node_id: node.id,
                    addr: node.addr.clone(),
                    learner_only: false,
                })
                .await
                .unwrap_or_else(|e| panic!("add node {}: {e}\n{}", node.id, node.log()));
        }
        MetaCluster { nodes, _dir: dir }
    }

    /// The node id of the leader as the running nodes agree on it.
    pub async fn leader(&self) -> u64 {
        eventually("a leader", Duration::from_secs(30), || async {
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                if let Some(status) = node.status().await
                    && status.role == "leader"
                {
                    return Some(status.node_id);
                }
            }
            None
        })
        .await
    }

    /// The node with id `id`.
    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        &mut self.nodes[(id - 1) as usize]
    }
}

/// A Texas retention policy for tests (version 1 when it is the first).
pub fn tx_policy() -> MetaCommand {
    MetaCommand::PutPolicy {
        jurisdiction: Jurisdiction::Tx,
        policy: RetentionPolicy {
            recording_retention_days: 365,
            call_detail_retention_days: 730,
            privileged_retention: PrivilegedRetention::CallDetail,
            hold_requires_review_date: false,
            hold_max_review_days: 365,
            sweep_interval_seconds: 30,
            source: "test".into(),
        },
        expected_version: 0,
        principal: "operator".into(),
        at: UnixMillis(1_700_000_000_000),
    }
}

/// Call `i`'s commit: a recorded Texas call with one chunk, distinct content per `i`.
pub fn commit(i: usize) -> MetaCommand {
    let started = 1_700_000_000_000 + i as i64 * 1000;
    MetaCommand::CommitCall {
        call: CallRecord {
            call_id: CallId::new(&format!("call-{i}")).unwrap(),
            jurisdiction: Jurisdiction::Tx,
            facility_id: format!("fac-{}", i % 7),
            inmate_id: format!("inm-{}", i % 101),
            number_fingerprint: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            direction: Direction::Outbound,
            started_at: UnixMillis(started),
            ended_at: UnixMillis(started + 600_000),
            byte_length: 4_800_000,
            chunk_count: 1,
            plaintext_digest: *blake3::hash(format!("audio-{i}").as_bytes()).as_bytes(),
            committed_under_policy: 0,
            sealed: false,
            lifecycle: Lifecycle::Live,
            holds: Vec::new(),
        },
        wrapped_key: vec![7; 72],
        chunk_ids: vec![*blake3::hash(format!("chunk-{i}").as_bytes()).as_bytes()],
        principal: "platform".into(),
        at: UnixMillis(started + 601_000),
    }
}
