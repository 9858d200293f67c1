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
use callvault_proto::auth::{AuthChannel, Bearer};
pub use callvault_proto::identity::Role;
use callvault_proto::proof::SigningKey;
use callvault_proto::v1 as pb;
use callvault_proto::v1::cluster_client::ClusterClient;
use callvault_proto::v1::meta_store_client::MetaStoreClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
pub use tonic_health::pb::health_check_response::ServingStatus;

/// The health service whose status is a meta node's readiness (the binary's
/// `bootstrap::READINESS_SERVICE`, which the Kubernetes readiness probes name too).
pub const META_READINESS_SERVICE: &str = "callvault.v1.MetaStore";

/// Where Debian's libfaketime lives (`faketime` package, installed by scripts/setup).
fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|candidate| candidate.exists())
}

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

/// Runs `callvault` with `args` to completion and returns its output. `CALLVAULT_TOKEN` is the
/// auditor's token (the `audit` commands need one); [`run_callvault_as`] names another.
pub fn run_callvault(args: &[&str]) -> Output {
    run_callvault_as(AUDITOR_TOKEN, args)
}

/// Runs `callvault` with `args`, presenting `token` through `CALLVAULT_TOKEN` (and signing with
/// its principal's key through `CALLVAULT_KEY_FILE`, when the harness knows it).
pub fn run_callvault_as(token: &str, args: &[&str]) -> Output {
    let mut command = Command::new(callvault_bin());
    command.args(args).env("CALLVAULT_TOKEN", token);
    if let Some(file) = key_file_of(token) {
        command.env("CALLVAULT_KEY_FILE", file);
    }
    command
        .current_dir(repo_root())
        .output()
        .expect("callvault starts")
}

/// The operator token every test node accepts.
pub const OPERATOR_TOKEN: &str = "test-operator-token-000000000000";
/// The auditor token every test node accepts.
pub const AUDITOR_TOKEN: &str = "test-auditor-token-0000000000000";
/// The token of a Texas agency every test node accepts.
pub const AGENCY_TX_TOKEN: &str = "test-agency-tx-token-00000000000";
/// The token of a California agency every test node accepts.
pub const AGENCY_CA_TOKEN: &str = "test-agency-ca-token-00000000000";
/// The signing key of the harness principal whose token is `token` (derived from it).
pub fn harness_key(token: &str) -> SigningKey {
    let key = SigningKey::from_seed(blake3::hash(token.as_bytes()).as_bytes());
    remember_key(token, key.clone());
    key
}

/// Signing keys of the principals the harness knows, by token: a channel presenting one of
/// these tokens signs every request with the principal's key, as the CLI does.
static PRINCIPAL_KEYS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, SigningKey>>,
> = std::sync::LazyLock::new(Default::default);

/// Signs requests presenting `token` with `key` from now on.
pub fn remember_key(token: &str, key: SigningKey) {
    PRINCIPAL_KEYS
        .lock()
        .expect("not poisoned")
        .insert(token.to_string(), key);
}

/// A key file of the principal presenting `token`, for the CLI (`CALLVAULT_KEY_FILE`), if the
/// harness knows the principal. Written once per process under the temp directory.
pub fn key_file_of(token: &str) -> Option<PathBuf> {
    let key = key_of(token)?;
    let dir = std::env::temp_dir().join(format!("callvault-test-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("key dir");
    let path = dir.join(format!("{}.key", blake3::hash(token.as_bytes()).to_hex()));
    if !path.exists() {
        std::fs::write(&path, key.to_file_text().as_str()).expect("key file written");
    }
    Some(path)
}

/// The signing key of the principal presenting `token`, if the harness knows it.
pub fn key_of(token: &str) -> Option<SigningKey> {
    PRINCIPAL_KEYS
        .lock()
        .expect("not poisoned")
        .get(token)
        .cloned()
}

/// Reads tokens.env as `callvault dev` writes it: `(variable, value)` pairs, and every dev
/// principal's key remembered for its token.
fn read_tokens_env(path: &Path) -> std::collections::HashMap<String, String> {
    let vars: std::collections::HashMap<String, String> = std::fs::read_to_string(path)
        .expect("tokens.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (var, token) in &vars {
        if let Some(prefix) = var.strip_suffix("_TOKEN")
            && let Some(file) = vars.get(&format!("{prefix}_KEY"))
        {
            let key = SigningKey::load(Path::new(file)).expect("a dev principal's key");
            remember_key(token, key);
        }
    }
    vars
}

/// The token of `role` on every harness cluster (dev clusters make their own: see
/// [`DevCluster::role_token`]).
pub fn role_token(role: Role) -> String {
    format!("test-{role}-role-token-00000000000")
}

/// Writes the principals, the role tokens and the peers file test nodes share into `dir` (once)
/// and returns the config sections that point at them.
fn shared_secrets(dir: &Path) -> String {
    for token in [
        OPERATOR_TOKEN,
        AUDITOR_TOKEN,
        AGENCY_TX_TOKEN,
        AGENCY_CA_TOKEN,
    ] {
        harness_key(token);
    }
    let principals = dir.join("principals.toml");
    let peers = dir.join("peers.toml");
    let token_file = |role: Role| dir.join(format!("{role}.token"));
    if !principals.exists() {
        let hash = |t: &str| blake3::hash(t.as_bytes()).to_hex().to_string();
        let entry = |name: &str, role: &str, jurisdictions: &str, token: &str| {
            format!(
                "[[principal]]\nname = \"{name}\"\nrole = \"{role}\"\njurisdictions = [{jurisdictions}]\n\
                 token_blake3 = \"{}\"\npublic_key = \"{}\"\n",
                hash(token),
                harness_key(token).public_key()
            )
        };
        let text = [
            entry("test-operator", "operator", "", OPERATOR_TOKEN),
            entry("test-auditor", "auditor", "\"*\"", AUDITOR_TOKEN),
            entry("test-agency-tx", "agency", "\"US-TX\"", AGENCY_TX_TOKEN),
            entry("test-agency-ca", "agency", "\"US-CA\"", AGENCY_CA_TOKEN),
        ]
        .concat();
        std::fs::write(&principals, text).expect("principals written");
        let mut table = String::new();
        for role in Role::ALL {
            std::fs::write(token_file(role), role_token(role)).expect("role token written");
            table.push_str(&format!(
                "[[peer]]\nrole = \"{role}\"\ntoken_blake3 = \"{}\"\n",
                blake3::hash(role_token(role).as_bytes()).to_hex()
            ));
        }
        std::fs::write(&peers, table).expect("peers written");
    }
    let files: Vec<String> = [Role::Meta, Role::Blob, Role::Ingest, Role::Api]
        .into_iter()
        .map(|role| format!("{role} = {:?}", token_file(role)))
        .collect();
    format!(
        "[identity]\npeers_file = {peers:?}\ntoken_files = {{ {} }}\n\n[auth]\nprincipals_file = {principals:?}\n",
        files.join(", ")
    )
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

fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(blob_files(&path));
            } else if path.extension().is_some_and(|e| e == "blob") {
                out.push(path);
            }
        }
    }
    out
}

/// Flips one byte inside every on-disk copy of `needle` in the blob files under `dir` (a
/// stopped shard's data, so everything is flushed to blob files); returns the copies changed.
pub fn flip_on_disk(dir: &Path, needle: &[u8]) -> usize {
    let mut flipped = 0;
    for path in blob_files(dir) {
        let mut bytes = std::fs::read(&path).unwrap();
        let mut at = 0;
        let mut changed = false;
        while let Some(pos) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
            bytes[at + pos + needle.len() / 2] ^= 0x01;
            at += pos + needle.len();
            changed = true;
            flipped += 1;
        }
        if changed {
            std::fs::write(&path, bytes).unwrap();
        }
    }
    flipped
}

/// Every regular file under `dirs`, read whole (for scans of what a node keeps on disk).
pub fn files(dirs: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    let mut out = Vec::new();
    for dir in dirs {
        walk(dir, &mut out);
    }
    out
}

/// The files of `files` that contain `needle`.
pub fn holders<'a>(files: &'a [(PathBuf, Vec<u8>)], needle: &[u8]) -> Vec<&'a Path> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path.as_path())
        .collect()
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
    /// Extra environment variables of the process (e.g. `OTEL_*`).
    env: Vec<(String, String)>,
    /// A program the process runs under, with its arguments (empty: none).
    /// How the harness reaches a node that serves TLS.
    tls: Option<ClientTlsConfig>,
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
        let secrets = shared_secrets(dir);
        std::fs::write(
            &config,
            format!(
                "node_id = {id}\ndata_dir = {data:?}\nlisten_addr = \"{addr}\"\nroles = [{roles}]\n{secrets}\n{extra}\n"
            ),
        )
        .expect("config written");
        Self::from_config(config, id, addr)
    }

    /// A node whose config file is already written (e.g. by `callvault dev --init-only`).
    pub fn from_config(config: PathBuf, id: u64, addr: String) -> Self {
        let log = config.with_file_name(format!("node-{id}.log"));
        NodeProcess {
            id,
            addr,
            config,
            log,
            child: None,
            env: Vec::new(),
            tls: None,
        }
    }

    /// Appends `toml` to the node's config file (before it starts), e.g. a `[bootstrap]` section
    /// that names nodes created after it.
    pub fn append_config(&self, toml: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .expect("config exists");
        writeln!(file, "\n{toml}").expect("config appended");
    }

    /// The node's config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The gRPC health status the node reports for `service` (`""`: the process), or `None` if
    /// it does not answer or does not know the service.
    pub async fn health(&self, service: &str) -> Option<ServingStatus> {
        let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel());
        let response = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    }

    /// Whether the node reports itself ready: a caught-up metadata-store voter.
    pub async fn is_ready(&self) -> bool {
        self.health(META_READINESS_SERVICE).await == Some(ServingStatus::Serving)
    }

    /// Runs the process's next starts with its wall clock moved by `offset` (libfaketime's
    /// syntax: `+365d`, `-120`), the library preloaded into the node itself: the `faketime`
    /// wrapper forks, and a signal to the wrapper would miss (and leak) the node.
    pub fn skew_clock(&mut self, offset: &str) {
        let library =
            libfaketime().expect("libfaketime (scripts/setup installs Debian's faketime)");
        self.set_env("LD_PRELOAD", library.to_str().expect("utf-8 path"));
        self.set_env("FAKETIME", offset);
    }

    /// Sets an environment variable for the process's next starts.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The node's data directory (as the harness lays it out).
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
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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

    /// Pauses the process (SIGSTOP): it keeps its sockets but answers nothing, like a node
    /// stuck in a long GC pause or a frozen VM.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the node is running");
        // SAFETY: sending a signal to a child process we own.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
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

    /// The process id, while it runs (for /proc figures in the benches).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How the process ended, once it has exited by itself (it is then no longer running).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("wait")?;
        self.child = None;
        Some(status)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// From now on, reach the node over TLS, trusting `ca_pem`.
    pub fn use_tls(&mut self, ca_pem: &str) {
        self.tls = Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)));
    }

    /// A channel to the node.
    pub fn channel(&self) -> Channel {
        self.channel_with_timeout(Duration::from_secs(10))
    }

    /// A channel to the node whose requests may last `timeout` (a slow stream).
    pub fn channel_with_timeout(&self, timeout: Duration) -> Channel {
        let endpoint = match &self.tls {
            Some(tls) => Endpoint::from_shared(format!("https://{}", self.addr))
                .expect("valid uri")
                .tls_config(tls.clone())
                .expect("a valid CA"),
            None => Endpoint::from_shared(format!("http://{}", self.addr)).expect("valid uri"),
        };
        endpoint
            .connect_timeout(Duration::from_millis(500))
            .timeout(timeout)
            .connect_lazy()
    }

    /// The node's MetaStore client, as a `meta` peer.
    pub fn meta(&self) -> MetaStoreClient<AuthChannel> {
        MetaStoreClient::new(self.with_token(&role_token(Role::Meta)))
    }

    /// The node's Cluster client, presenting the operator token.
    pub fn cluster(&self) -> ClusterClient<AuthChannel> {
        ClusterClient::new(self.with_token(OPERATOR_TOKEN))
    }

    /// A channel to the node presenting `token` (and signing each request with its principal's
    /// key, when the harness knows the principal).
    pub fn with_token(&self, token: &str) -> AuthChannel {
        self.with_token_on(token, self.channel())
    }

    /// `channel` presenting `token`.
    pub fn with_token_on(&self, token: &str, channel: Channel) -> AuthChannel {
        let bearer = Bearer::new(token).expect("a valid token");
        match key_of(token) {
            Some(key) => bearer.signed_channel(channel, key),
            None => bearer.channel(channel),
        }
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

/// `deploy/local/` as operators run it, with only its ports and directories moved so tests can
/// run side by side: secrets (the audit key too) and tokens from `callvault dev --init-only`, and
/// the three node configs, written but not started.
pub struct LocalSet {
    /// Nodes 1, 2 and 3, by position.
    pub nodes: Vec<NodeProcess>,
    /// The directory `callvault dev --init-only` filled (`secrets/`, `tokens.env`).
    pub state: PathBuf,
    tokens: std::collections::HashMap<String, String>,
}

impl LocalSet {
    /// Writes the set under `dir`.
    pub fn write(dir: &Path) -> Self {
        let state = dir.join("local");
        let out = run_callvault(&[
            "dev",
            "--init-only",
            "--dir",
            state.to_str().expect("utf-8"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let blob: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for id in 1..=3usize {
            let mut text =
                std::fs::read_to_string(repo_root().join(format!("deploy/local/node-{id}.toml")))
                    .expect("deploy/local config");
            for i in 0..3 {
                text = text
                    .replace(
                        &format!("127.0.0.1:{}", 7101 + i),
                        &format!("127.0.0.1:{}", grpc[i]),
                    )
                    .replace(
                        &format!("127.0.0.1:{}", 7401 + i),
                        &format!("127.0.0.1:{}", blob[i]),
                    );
            }
            let text = text.replace(".callvault/local", state.to_str().expect("utf-8"));
            assert!(
                !text.contains(":710") && !text.contains(":740"),
                "a port was not moved"
            );
            let config = dir.join(format!("node-{id}.toml"));
            std::fs::write(&config, text).expect("config written");
            nodes.push(NodeProcess::from_config(
                config,
                id as u64,
                format!("127.0.0.1:{}", grpc[id - 1]),
            ));
        }
        let tokens = read_tokens_env(&state.join("tokens.env"));
        LocalSet {
            nodes,
            state,
            tokens,
        }
    }

    /// Starts the three nodes and waits until each reports itself a ready voter. No `cluster
    /// init`: the processes form the cluster by themselves.
    pub async fn start_and_wait_ready(&mut self) {
        for node in &mut self.nodes {
            node.start();
        }
        let nodes = &self.nodes;
        eventually(
            "the three local nodes ready",
            Duration::from_secs(90),
            || async {
                for node in nodes {
                    if !node.is_ready().await {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }

    /// The dev token of `name` (`OPERATOR`, `PLATFORM`, `AGENCY_TX`, …).
    pub fn token(&self, name: &str) -> String {
        self.tokens[&format!("CALLVAULT_DEV_{name}_TOKEN")].clone()
    }

    /// The token of `role`, as `callvault dev --init-only` made it.
    pub fn role_token(&self, role: Role) -> String {
        read_role_token(&self.state, role)
    }

    /// The `host:port` of each node's blob shard, from its config.
    pub fn shard_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| {
                let text = std::fs::read_to_string(node.config_path()).expect("config");
                let value: toml::Value = toml::from_str(&text).expect("valid TOML");
                value["blob"]["listen_addr"]
                    .as_str()
                    .expect("blob.listen_addr")
                    .to_string()
            })
            .collect()
    }
}

/// The token of `role` in a directory `callvault dev --init-only` filled.
fn read_role_token(state: &Path, role: Role) -> String {
    std::fs::read_to_string(state.join(format!("secrets/{role}.token")))
        .unwrap_or_else(|e| panic!("{role} token: {e}"))
        .trim()
        .to_string()
}

/// Plays back the call `request` names through `content`; the audio, once the whole stream
/// arrived and its length matched the header's.
pub async fn play_back(
    mut content: pb::content_client::ContentClient<AuthChannel>,
    request: pb::PlaybackRequest,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = content.playback(request).await?.into_inner();
    let mut header = None;
    let mut audio = Vec::new();
    while let Some(message) = stream.message().await? {
        match message.part {
            Some(pb::playback_response::Part::Header(h)) => header = Some(h),
            Some(pb::playback_response::Part::Audio(bytes)) => audio.extend(bytes),
            None => {}
        }
    }
    let header = header.expect("a header first");
    assert_eq!(header.byte_length, audio.len() as u64, "audio vs header");
    Ok(audio)
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
        // The fixture calls ([`commit`]) started long ago: with the retention sweeper on they
        // would expire under the tests that count them. Retention is tested on dev clusters.
        let extra = format!("{extra}\n[lifecycle]\nenabled = false\n");
        let mut nodes: Vec<NodeProcess> = (1..=size)
            .map(|id| NodeProcess::new(dir.path(), id, &extra))
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
            shortening_notice_seconds: 0,
        },
        expected_version: 0,
        principal: "operator".into(),
        at: UnixMillis(1_700_000_000_000),
    }
}

/// Call `i`'s commit: a recorded Texas call with one chunk, distinct content per `i`.
pub fn commit(i: usize) -> MetaCommand {
    // A day before this test process first asked, plus a second per call: within any policy's
    // retention (the sweeper works on cluster time, and a call started in 2023 would be expired
    // and its call-detail record deleted by now), and the same for every retry of call `i`.
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| wall_clock().0 / 1000 * 1000 - 86_400_000);
    let started = base + i as i64 * 1000;
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
        // Proposed now: a commit proposed long before it applies is refused (its chunks may
        // have been swept as orphans), whenever the call itself started.
        at: wall_clock(),
    }
}

/// This machine's clock as Unix milliseconds.
pub fn wall_clock() -> UnixMillis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    UnixMillis(since.as_millis() as i64)
}

/// A cluster as `callvault dev` lays it out (three nodes, every role, dev secrets and tokens,
/// the default policies in force), but on free ports in a temporary directory, with each node a
/// [`NodeProcess`] the test can kill and restart.
pub struct DevCluster {
    /// Nodes 1, 2, 3.
    pub nodes: Vec<NodeProcess>,
    /// The blob shards' addresses, by node.
    pub shard_addrs: Vec<String>,
    tokens: std::collections::HashMap<String, String>,
    state: PathBuf,
    audit_vkey: String,
    _dir: tempfile::TempDir,
}

/// At most two dev clusters run at once, so six node processes share the two cores.
static DEV_CLUSTERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

impl DevCluster {
    /// Writes the layout with `callvault dev --init-only`, starts the nodes, forms the cluster and
    /// puts the default policies in force. Holds a slot of [`DEV_CLUSTERS`] until dropped.
    pub async fn start() -> (Self, tokio::sync::SemaphorePermit<'static>) {
        Self::launch("", &[], None).await
    }

    /// [`DevCluster::start`], with `extra` TOML appended to every node's config (new sections
    /// only, e.g. `[playback]`).
    pub async fn start_with(extra: &str) -> (Self, tokio::sync::SemaphorePermit<'static>) {
        Self::launch(extra, &[], None).await
    }

    /// [`DevCluster::start_with`], with node 1 — the one that initializes the cluster, so its
    /// first leader — running with its wall clock moved by `offset` (libfaketime's syntax, e.g.
    /// `+365d`).
    pub async fn start_with_first_node_clock(
        offset: &str,
        extra: &str,
    ) -> (Self, tokio::sync::SemaphorePermit<'static>) {
        Self::launch(extra, &[], Some(offset)).await
    }

    /// [`DevCluster::start`], with extra environment variables for every node process.
    pub async fn start_with_env(
        env: &[(&str, &str)],
    ) -> (Self, tokio::sync::SemaphorePermit<'static>) {
        Self::launch("", env, None).await
    }

    async fn launch(
        extra: &str,
        env: &[(&str, &str)],
        first_node_clock: Option<&str>,
    ) -> (Self, tokio::sync::SemaphorePermit<'static>) {
        let permit = DEV_CLUSTERS.acquire().await.expect("semaphore open");
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let blob_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let list = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let out = run_callvault(&[
            "dev",
            "--init-only",
            "--dir",
            dir.path().to_str().expect("utf-8 temp dir"),
            "--ports",
            &list(&ports),
            "--blob-ports",
            &list(&blob_ports),
        ]);
        assert!(
            out.status.success(),
            "callvault dev --init-only: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tokens = read_tokens_env(&dir.path().join("tokens.env"));
        if !extra.is_empty() {
            for id in 1..=3 {
                let path = dir.path().join(format!("node-{id}.toml"));
                let mut config = std::fs::read_to_string(&path).expect("node config");
                config.push('\n');
                config.push_str(extra);
                std::fs::write(&path, config).expect("node config");
            }
        }
        let audit_vkey = std::fs::read_to_string(dir.path().join("audit.vkey"))
            .expect("audit.vkey")
            .trim()
            .to_string();
        let mut nodes: Vec<NodeProcess> = (1..=3u64)
            .map(|id| {
                NodeProcess::from_config(
                    dir.path().join(format!("node-{id}.toml")),
                    id,
                    format!("127.0.0.1:{}", ports[id as usize - 1]),
                )
            })
            .collect();
        if let Some(offset) = first_node_clock {
            nodes[0].skew_clock(offset);
        }
        for node in &mut nodes {
            for (key, value) in env {
                node.set_env(key, value);
            }
            node.start();
        }
        let cluster = DevCluster {
            nodes,
            shard_addrs: blob_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
            tokens,
            state: dir.path().to_path_buf(),
            audit_vkey,
            _dir: dir,
        };
        cluster.form().await;
        let out = run_callvault_as(
            cluster.token("operator"),
            &[
                "policy",
                "put-all",
                "--file",
                "deploy/policies/default.toml",
                "--addr",
                &cluster.nodes[0].addr,
                "--token",
                cluster.token("operator"),
            ],
        );
        assert!(
            out.status.success(),
            "policy put-all: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (cluster, permit)
    }

    async fn form(&self) {
        let operator = self.token("operator");
        for node in &self.nodes {
            eventually("a dev node to answer", Duration::from_secs(60), || async {
                ClusterClient::new(node.with_token(operator))
                    .status(pb::StatusRequest {})
                    .await
                    .ok()
            })
            .await;
        }
        let mut first = ClusterClient::new(self.nodes[0].with_token(operator));
        first.init(pb::InitRequest {}).await.expect("init");
        for node in &self.nodes[1..] {
            first
                .add_member(pb::AddMemberRequest {
                    node_id: node.id,
                    addr: node.addr.clone(),
                    learner_only: false,
                })
                .await
                .unwrap_or_else(|e| panic!("add node {}: {e}", node.id));
        }
    }

    /// A dev token by principal name (`platform`, `platform-tx`, `agency-tx`, `agency-ca`,
    /// `registry`, `auditor`, `operator`).
    pub fn token(&self, name: &str) -> &str {
        let key = format!(
            "CALLVAULT_DEV_{}_TOKEN",
            name.to_uppercase().replace('-', "_")
        );
        self.tokens
            .get(&key)
            .unwrap_or_else(|| panic!("no dev token {name}"))
    }

    /// The verifier key of the cluster's audit log, as `callvault dev` publishes it.
    pub fn audit_vkey(&self) -> &str {
        &self.audit_vkey
    }

    /// The Audit client of node `id` presenting `token`.
    pub fn audit(&self, id: u64, token: &str) -> pb::audit_client::AuditClient<AuthChannel> {
        pb::audit_client::AuditClient::new(self.nodes[id as usize - 1].with_token(token))
    }

    /// The Ingest client of node `id` presenting `token`.
    pub fn ingest(&self, id: u64, token: &str) -> pb::ingest_client::IngestClient<AuthChannel> {
        pb::ingest_client::IngestClient::new(self.nodes[id as usize - 1].with_token(token))
    }

    /// The Ingest client of node `id` presenting `token`, for streams that last up to two
    /// minutes.
    pub fn slow_ingest(
        &self,
        id: u64,
        token: &str,
    ) -> pb::ingest_client::IngestClient<AuthChannel> {
        let node = &self.nodes[id as usize - 1];
        let channel = node.channel_with_timeout(Duration::from_secs(120));
        pb::ingest_client::IngestClient::new(node.with_token_on(token, channel))
    }

    /// The Query client of node `id` presenting `token`.
    pub fn query(&self, id: u64, token: &str) -> pb::query_client::QueryClient<AuthChannel> {
        pb::query_client::QueryClient::new(self.nodes[id as usize - 1].with_token(token))
    }

    /// The Admin client of node `id` presenting `token`.
    pub fn admin(&self, id: u64, token: &str) -> pb::admin_client::AdminClient<AuthChannel> {
        pb::admin_client::AdminClient::new(self.nodes[id as usize - 1].with_token(token))
    }

    /// The Content client of node `id` presenting `token`.
    pub fn content(&self, id: u64, token: &str) -> pb::content_client::ContentClient<AuthChannel> {
        pb::content_client::ContentClient::new(self.nodes[id as usize - 1].with_token(token))
    }

    /// Waits until node `node` reports every Texas call of `ids` purged with all its receipts in
    /// (`CallStatus.purge_progress` DONE).
    pub async fn wait_purge_done(&self, node: u64, ids: &[String], timeout: Duration) {
        let query = self.query(node, self.token("agency-tx"));
        for id in ids {
            eventually("the shred's receipts", timeout, || {
                let mut query = query.clone();
                let call_id = id.clone();
                async move {
                    let status = query
                        .call_status(pb::CallStatusRequest {
                            call_id,
                            jurisdiction: "US-TX".into(),
                        })
                        .await
                        .expect("call status")
                        .into_inner();
                    (status.purge_progress == pb::PurgeProgress::Done as i32).then_some(())
                }
            })
            .await;
        }
    }

    /// Registers `number` as an attorney's in `jurisdiction` through node 1, as the registry;
    /// how many past recordings the registration purged.
    pub async fn register_attorney(&self, jurisdiction: &str, number: &str) -> u64 {
        self.admin(1, self.token("registry"))
            .register_privileged_number(pb::RegisterPrivilegedNumberRequest {
                jurisdiction: jurisdiction.into(),
                number: number.into(),
                kind: pb::PrivilegeKind::Attorney as i32,
                evidence: "TX bar 24012345".into(),
            })
            .await
            .expect("registration")
            .into_inner()
            .calls_purged
    }

    /// Puts a Texas policy keeping recordings `days` days, swept every `sweep_seconds`. The
    /// operator proposes it; a shortening (pending until its notice ends) is approved at once by
    /// a Texas agency, the second principal the rule asks for.
    pub async fn put_tx_policy(&self, days: u32, sweep_seconds: u32) {
        let mut admin = self.admin(1, self.token("operator"));
        let current = admin
            .get_policy(pb::GetPolicyRequest {
                jurisdiction: "US-TX".into(),
                version: 0,
            })
            .await
            .expect("get policy")
            .into_inner()
            .policy
            .expect("a policy in force");
        let policy = pb::RetentionPolicy {
            recording_retention_days: days,
            call_detail_retention_days: current.call_detail_retention_days.max(days),
            sweep_interval_seconds: sweep_seconds,
            ..current.clone()
        };
        let request = pb::PutPolicyRequest {
            jurisdiction: "US-TX".into(),
            policy: Some(policy),
            expected_version: current.version,
        };
        // A shortening counts its notice in cluster time: UNAVAILABLE until the voters made one.
        let put = eventually("the policy put", Duration::from_secs(20), || {
            let (mut admin, request) = (admin.clone(), request.clone());
            async move {
                match admin.put_policy(request).await {
                    Ok(put) => Some(put.into_inner()),
                    Err(e) if e.code() == tonic::Code::Unavailable => None,
                    Err(e) => panic!("put policy: {e:?}"),
                }
            }
        })
        .await;
        if !put.pending_change_id.is_empty() {
            self.approve_tx_change(&put.pending_change_id).await;
        }
    }

    /// Writes (does not start) a fourth, meta-only node that shares the cluster's secrets:
    /// node `id`, its own port and data directory.
    pub fn meta_only_node(&self, id: u64) -> NodeProcess {
        let dir = self.nodes[2]
            .config_path()
            .parent()
            .expect("configs sit in the layout directory")
            .to_path_buf();
        let template = std::fs::read_to_string(self.nodes[2].config_path()).expect("node-3.toml");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = String::new();
        for line in template.lines() {
            if line.starts_with("[blob]") {
                break;
            }
            let line = match line {
                l if l.starts_with("node_id") => format!("node_id = {id}"),
                l if l.starts_with("data_dir") => {
                    format!("data_dir = {:?}", dir.join(format!("node-{id}")))
                }
                l if l.starts_with("listen_addr") => format!("listen_addr = \"{addr}\""),
                l if l.starts_with("roles") => "roles = [\"meta\"]".to_string(),
                l => l.to_string(),
            };
            config.push_str(&line);
            config.push('\n');
        }
        let path = dir.join(format!("node-{id}.toml"));
        std::fs::write(&path, config).expect("node config");
        NodeProcess::from_config(path, id, addr)
    }

    /// A Texas agency approves the pending change `change_id`.
    pub async fn approve_tx_change(&self, change_id: &str) -> pb::PendingChange {
        self.admin(1, self.token("agency-tx"))
            .approve_change(pb::ChangeRequest {
                jurisdiction: "US-TX".into(),
                change_id: change_id.into(),
            })
            .await
            .expect("approve the change")
            .into_inner()
            .change
            .expect("the change")
    }

    /// The token of `role`, as `callvault dev` made it.
    pub fn role_token(&self, role: Role) -> String {
        read_role_token(&self.state, role)
    }

    /// The MetaStore client of node `id`, as a `meta` peer.
    pub fn meta(&self, id: u64) -> MetaStoreClient<AuthChannel> {
        MetaStoreClient::new(self.nodes[id as usize - 1].with_token(&self.role_token(Role::Meta)))
    }

    /// The blob shard of node `id`, as a `blob` peer.
    pub fn shard(&self, id: u64) -> pb::blob_shard_client::BlobShardClient<AuthChannel> {
        let channel =
            Endpoint::from_shared(format!("http://{}", self.shard_addrs[id as usize - 1]))
                .expect("valid uri")
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(10))
                .connect_lazy();
        pb::blob_shard_client::BlobShardClient::new(
            Bearer::new(&self.role_token(Role::Blob))
                .expect("token")
                .channel(channel),
        )
    }

    /// Chunks stored on each running node's shard (`None` for a stopped node).
    pub async fn chunk_counts(&self) -> Vec<Option<u64>> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            counts.push(if node.is_running() {
                Some(
                    self.shard(node.id)
                        .status(pb::ShardStatusRequest {})
                        .await
                        .expect("shard status")
                        .into_inner()
                        .chunks,
                )
            } else {
                None
            });
        }
        counts
    }

    /// The node id of the current leader.
    pub async fn leader(&self) -> u64 {
        let operator = self.token("operator");
        eventually("a leader", Duration::from_secs(30), || async {
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                if let Ok(s) = ClusterClient::new(node.with_token(operator))
                    .status(pb::StatusRequest {})
                    .await
                    && s.get_ref().role == "leader"
                {
                    return Some(node.id);
                }
            }
            None
        })
        .await
    }
}

/// One synthetic call's messages: start, `chunks` chunks of `chunk_bytes`, end.
pub struct TestCall {
    /// Its CallStart.
    pub start: pb::CallStart,
    /// Its audio chunks.
    pub chunks: Vec<pb::AudioChunk>,
    /// Its CallEnd.
    pub end: pb::CallEnd,
}

impl TestCall {
    /// A call of `jurisdiction` to `number`, started a minute ago, with audio derived from `seed`.
    pub fn new(call_id: &str, jurisdiction: &str, number: &str, chunks: u32, seed: u8) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let audio: Vec<pb::AudioChunk> = (0..chunks)
            .map(|seq| pb::AudioChunk {
                seq,
                data: (0..16_000u32)
                    .map(|i| (i.wrapping_mul(31) ^ seq ^ u32::from(seed)) as u8)
                    .collect(),
            })
            .collect();
        let mut hasher = blake3::Hasher::new();
        for c in &audio {
            hasher.update(&c.data);
        }
        TestCall {
            start: pb::CallStart {
                call_id: call_id.into(),
                jurisdiction: jurisdiction.into(),
                facility_id: "fac-huntsville".into(),
                inmate_id: "inm-1001".into(),
                dialed_number: number.into(),
                direction: pb::CallDirection::Outbound as i32,
                started_at: Some(prost_types::Timestamp {
                    seconds: now - 60,
                    nanos: 0,
                }),
                recording_notice_accepted: true,
            },
            end: pb::CallEnd {
                ended_at: Some(prost_types::Timestamp {
                    seconds: now - 1,
                    nanos: 0,
                }),
                byte_length: audio.iter().map(|c| c.data.len() as u64).sum(),
                plaintext_blake3: hasher.finalize().as_bytes().to_vec(),
            },
            chunks: audio,
        }
    }

    /// The same call, started `seconds` ago (and lasting 30 seconds).
    pub fn started_ago(mut self, seconds: i64) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        self.start.started_at = Some(prost_types::Timestamp {
            seconds: now - seconds,
            nanos: 0,
        });
        self.end.ended_at = Some(prost_types::Timestamp {
            seconds: now - seconds + 30,
            nanos: 0,
        });
        self
    }

    /// The same audio and call details under `call_id`, sent in chunks of `chunk_bytes` (the
    /// last one shorter): how another platform might cut the same stream.
    pub fn rechunked(&self, call_id: &str, chunk_bytes: usize) -> Self {
        let audio = self.audio();
        let mut start = self.start.clone();
        start.call_id = call_id.into();
        TestCall {
            start,
            end: self.end.clone(),
            chunks: audio
                .chunks(chunk_bytes)
                .enumerate()
                .map(|(seq, data)| pb::AudioChunk {
                    seq: seq as u32,
                    data: data.to_vec(),
                })
                .collect(),
        }
    }

    /// The call's audio, as ingested.
    pub fn audio(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.data.clone()).collect()
    }

    /// Every message of the stream, in order.
    pub fn messages(&self) -> Vec<pb::RecordCallRequest> {
        use pb::record_call_request::Part;
        let mut out = vec![pb::RecordCallRequest {
            part: Some(Part::Start(self.start.clone())),
        }];
        out.extend(self.chunks.iter().map(|c| pb::RecordCallRequest {
            part: Some(Part::Chunk(c.clone())),
        }));
        out.push(pb::RecordCallRequest {
            part: Some(Part::End(self.end.clone())),
        });
        out
    }

    /// Streams the call to `client` and returns the answer.
    pub async fn send(
        &self,
        client: &mut pb::ingest_client::IngestClient<AuthChannel>,
    ) -> Result<pb::RecordCallResponse, tonic::Status> {
        client
            .record_call(tokio_stream::iter(self.messages()))
            .await
            .map(tonic::Response::into_inner)
    }
}
