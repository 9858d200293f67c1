//! `callvault dev`: a local three-node cluster on one machine, every role on every node, with
//! generated secrets, dev tokens and the default policy file, in the foreground until Ctrl-C.
//!
//! Each node is a real `callvault serve` child process, so killing one shows what the cluster
//! does without it. Secrets are generated once and kept in the directory, so a restart reuses
//! the cluster's data.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callvault_core::Jurisdiction;
use callvault_core::policy::parse_policy_file;
use callvault_proto::auth::{Bearer, token_hash};
use callvault_proto::v1 as pb;
use callvault_proto::v1::cluster_client::ClusterClient;
use clap::Args;
use ring::rand::{SecureRandom, SystemRandom};

/// `callvault dev` arguments.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the cluster keeps its data, secrets and logs.
    #[arg(long, default_value = ".callvault/dev")]
    pub dir: PathBuf,
    /// Node i listens on base+i (gRPC) and base+300+i (blob shard).
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// Explicit gRPC ports of nodes 1, 2, 3 (overrides --base-port).
    #[arg(long, value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// Explicit blob-shard ports of nodes 1, 2, 3 (overrides --base-port).
    #[arg(long, value_delimiter = ',')]
    pub blob_ports: Vec<u16>,
    /// The retention policies put in force at start.
    #[arg(long, default_value = "deploy/policies/default.toml")]
    pub policies: PathBuf,
    /// Write the configs, secrets and tokens, print them, and exit without starting nodes.
    #[arg(long)]
    pub init_only: bool,
}

/// The origin line of the dev cluster's audit log.
pub const DEV_AUDIT_ORIGIN: &str = "callvault.dev/audit";

/// The dev principals: name, role, jurisdictions, extra principal-file lines.
const PRINCIPALS: &[(&str, &str, &str, &str)] = &[
    ("platform", "platform", "\"*\"", ""),
    ("platform-tx", "platform", "\"US-TX\"", ""),
    ("agency-tx", "agency", "\"US-TX\"", ""),
    ("agency-ca", "agency", "\"US-CA\"", ""),
    ("registry", "registry", "\"*\"", ""),
    ("auditor", "auditor", "\"*\"", ""),
    ("operator", "operator", "", ""),
    // A second Texas agency (its holds are not agency-tx's to release) and an investigator who
    // may play back sealed calls.
    ("agency-tx-2", "agency", "\"US-TX\"", ""),
    (
        "investigator-tx",
        "agency",
        "\"US-TX\"",
        "elevated = true\n",
    ),
];

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(buf.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Writes `text` to `path` readable by its owner only, unless the file exists.
fn write_secret_once(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Writes `text` to `path` readable by its owner only, replacing what was there.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// The dev cluster's layout on disk.
struct Layout {
    dir: PathBuf,
    ports: [u16; 3],
    blob_ports: [u16; 3],
}

impl Layout {
    fn secrets(&self) -> PathBuf {
        self.dir.join("secrets")
    }

    fn config(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node-{node}.toml"))
    }

    fn addr(&self, node: usize) -> String {
        format!("127.0.0.1:{}", self.ports[node - 1])
    }

    /// Generates what is missing: secrets, tokens, principals, node configs.
    fn write(&self) -> anyhow::Result<Vec<(String, String)>> {
        let secrets = self.secrets();
        std::fs::create_dir_all(&secrets)
            .with_context(|| format!("cannot create {}", secrets.display()))?;
        write_role_tokens(&secrets)?;
        write_secret_once(&secrets.join("index.key"), &random_hex(32)?)?;
        let mut keks =
            String::from("# Key-encryption keys of the dev cluster, one per jurisdiction.\n");
        for j in Jurisdiction::ALL {
            let _ = writeln!(keks, "{:?} = {:?}", j.code(), random_hex(32)?);
        }
        write_secret_once(&secrets.join("keks.toml"), &keks)?;
        // The audit log's signing key, and beside the cluster its public key for auditors to pin.
        let audit_key = secrets.join("audit.key");
        if !audit_key.exists() {
            write_secret_once(&audit_key, &super::audit::new_log_key(DEV_AUDIT_ORIGIN)?.0)?;
        }
        let signer = std::fs::read_to_string(&audit_key)
            .ok()
            .and_then(|text| callvault_audit::NoteSigner::from_encoded(text.trim()).ok())
            .with_context(|| format!("{} is not a log key", audit_key.display()))?;
        std::fs::write(
            self.dir.join("audit.vkey"),
            format!("{}\n", signer.verifier().vkey()),
        )?;

        let tokens = self.write_principal_credentials()?;
        let mut principals =
            String::from("# Dev principals; their tokens and key files are in tokens.env.\n");
        for ((name, role, jurisdictions, extra), (_, token)) in PRINCIPALS.iter().zip(&tokens) {
            let key = super::client::load_signing_key(&self.principal_key(name))?;
            let _ = writeln!(
                principals,
                "[[principal]]\nname = \"dev-{name}\"\nrole = \"{role}\"\njurisdictions = [{jurisdictions}]\ntoken_blake3 = \"{}\"\npublic_key = \"{}\"\n{extra}",
                token_hash(token).to_hex(),
                key.public_key(),
            );
        }
        std::fs::write(secrets.join("principals.toml"), principals)?;

        let shards: Vec<String> = (1..=3)
            .map(|i| {
                format!(
                    "{{ id = \"blob-{i}\", addr = \"127.0.0.1:{}\" }}",
                    self.blob_ports[i - 1]
                )
            })
            .collect();
        let meta_addrs: Vec<String> = (1..=3).map(|i| format!("{:?}", self.addr(i))).collect();
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        for node in 1..=3 {
            let config = format!(
                "# Written by `callvault dev`.\n\
                 node_id = {node}\n\
                 data_dir = {data:?}\n\
                 listen_addr = \"{addr}\"\n\
                 roles = [\"meta\", \"blob\", \"ingest\", \"api\"]\n\n\
                 [meta]\nheartbeat_ms = 150\nelection_timeout_min_ms = 600\nelection_timeout_max_ms = 1200\n\n\
                 [identity]\npeers_file = {peers:?}\n\
                 token_files = {{ meta = {meta_token:?}, blob = {blob_token:?}, ingest = {ingest_token:?}, api = {api_token:?} }}\n\n\
                 [cluster]\nindex_key_file = {index:?}\nkek_file = {keks:?}\n\
                 meta_addrs = [{meta}]\n\n\
                 [auth]\nprincipals_file = {principals:?}\n\n\
                 [audit]\norigin = \"{DEV_AUDIT_ORIGIN}\"\nsigning_key_file = {audit_key:?}\n\n\
                 [blob]\nlisten_addr = \"127.0.0.1:{blob_port}\"\nshards = [{shards}]\nreplicas = 3\n",
                data = abs(self.dir.join(format!("node-{node}"))),
                addr = self.addr(node),
                peers = abs(secrets.join("peers.toml")),
                meta_token = abs(secrets.join("meta.token")),
                blob_token = abs(secrets.join("blob.token")),
                ingest_token = abs(secrets.join("ingest.token")),
                api_token = abs(secrets.join("api.token")),
                index = abs(secrets.join("index.key")),
                keks = abs(secrets.join("keks.toml")),
                meta = meta_addrs.join(", "),
                principals = abs(secrets.join("principals.toml")),
                audit_key = abs(secrets.join("audit.key")),
                blob_port = self.blob_ports[node - 1],
                shards = shards.join(", "),
            );
            std::fs::write(self.config(node), config)?;
        }
        Ok(tokens)
    }
}

impl Layout {
    /// Where dev principal `name` keeps its signing key.
    fn principal_key(&self, name: &str) -> PathBuf {
        let dir = self.dir.join("principals");
        std::path::absolute(&dir)
            .unwrap_or(dir)
            .join(format!("{name}.key"))
    }

    /// Each dev principal's token and signing key, made once and kept: tokens.env lists the
    /// tokens (`CALLVAULT_DEV_<NAME>_TOKEN`) and the key files (`CALLVAULT_DEV_<NAME>_KEY`).
    /// Returns `(variable, token)` pairs in [`PRINCIPALS`] order.
    fn write_principal_credentials(&self) -> anyhow::Result<Vec<(String, String)>> {
        let tokens_path = self.dir.join("tokens.env");
        let existing = if tokens_path.exists() {
            read_tokens(&tokens_path)?
        } else {
            Vec::new()
        };
        std::fs::create_dir_all(self.dir.join("principals"))?;
        let mut tokens = Vec::new();
        let mut env = String::new();
        for (name, _, _, _) in PRINCIPALS {
            let var = dev_var(name);
            let token = match existing.iter().find(|(k, _)| *k == format!("{var}_TOKEN")) {
                Some((_, token)) => token.clone(),
                None => format!("cvdev-{name}-{}", random_hex(16)?),
            };
            let key_path = self.principal_key(name);
            if !key_path.exists() {
                let key = callvault_proto::proof::SigningKey::generate()
                    .map_err(|e| anyhow::anyhow!("principal key: {e}"))?;
                write_secret_once(&key_path, &key.to_file_text())?;
            }
            let _ = writeln!(env, "{var}_TOKEN={token}\n{var}_KEY={}", key_path.display());
            tokens.push((format!("{var}_TOKEN"), token));
        }
        write_secret(&tokens_path, &env)?;
        Ok(tokens)
    }
}

/// The `CALLVAULT_DEV_<NAME>` prefix of a dev principal's variables.
fn dev_var(name: &str) -> String {
    format!("CALLVAULT_DEV_{}", name.to_uppercase().replace('-', "_"))
}

/// A token per role (`<role>.token`, kept once made) and the peers file of their hashes that
/// every node's internal services check them against.
fn write_role_tokens(secrets: &Path) -> anyhow::Result<()> {
    let mut peers = String::from("# Role tokens of the dev cluster's workloads, by BLAKE3 hash.\n");
    for role in callvault_proto::identity::Role::ALL {
        let path = secrets.join(format!("{role}.token"));
        write_secret_once(&path, &format!("cvrole-{role}-{}", random_hex(24)?))?;
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let _ = writeln!(
            peers,
            "[[peer]]\nrole = \"{role}\"\ntoken_blake3 = \"{}\"\n",
            token_hash(token.trim()).to_hex()
        );
    }
    std::fs::write(secrets.join("peers.toml"), peers)
        .with_context(|| format!("cannot write {}", secrets.join("peers.toml").display()))
}

/// `(variable, token)` pairs of the `*_TOKEN` lines of tokens.env.
fn read_tokens(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(k, _)| k.ends_with("_TOKEN"))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

fn token<'a>(tokens: &'a [(String, String)], name: &str) -> &'a str {
    let key = format!("{}_TOKEN", dev_var(name));
    tokens
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// The node processes; stopped with SIGTERM (then killed) when dropped.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &self.0 {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for child in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn cluster_client(
    layout: &Layout,
    node: usize,
    operator: &str,
) -> anyhow::Result<ClusterClient<callvault_proto::auth::AuthChannel>> {
    let channel = super::connect(&layout.addr(node), Duration::from_secs(30)).await?;
    Ok(ClusterClient::new(Bearer::new(operator)?.channel(channel)))
}

/// Waits until node `node` answers, for up to 60 s.
async fn wait_for(
    layout: &Layout,
    node: usize,
    operator: &str,
) -> anyhow::Result<pb::ClusterStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut client) = cluster_client(layout, node, operator).await
            && let Ok(status) = client.status(pb::StatusRequest {}).await
        {
            return Ok(status.into_inner());
        }
        if Instant::now() > deadline {
            bail!(
                "node {node} did not answer within 60s; see {}",
                layout.dir.join(format!("node-{node}.log")).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Forms the cluster on first start: node 1 initializes, 2 and 3 join as voters.
async fn form_cluster(layout: &Layout, operator: &str) -> anyhow::Result<()> {
    let mut statuses = Vec::new();
    for node in 1..=3 {
        statuses.push(wait_for(layout, node, operator).await?);
    }
    if statuses.iter().any(|s| !s.members.is_empty()) {
        println!("cluster already formed; reusing its data");
        return Ok(());
    }
    let mut first = cluster_client(layout, 1, operator).await?;
    first
        .init(pb::InitRequest {})
        .await
        .context("initializing node 1")?;
    for node in 2..=3 {
        first
            .add_member(pb::AddMemberRequest {
                node_id: node as u64,
                addr: layout.addr(node),
                learner_only: false,
            })
            .await
            .with_context(|| format!("adding node {node}"))?;
    }
    println!("cluster formed: nodes 1, 2, 3 are voters");
    Ok(())
}

/// Runs `callvault dev`.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let pick = |explicit: &[u16], offset: u16| -> anyhow::Result<[u16; 3]> {
        if explicit.is_empty() {
            let base = args
                .base_port
                .checked_add(offset + 3)
                .context("--base-port too high")?;
            return Ok([base - 2, base - 1, base]);
        }
        explicit
            .try_into()
            .map_err(|_| anyhow::anyhow!("give exactly three ports"))
    };
    let layout = Layout {
        dir: args.dir.clone(),
        ports: pick(&args.ports, 0)?,
        blob_ports: pick(&args.blob_ports, 300)?,
    };
    let policy_text = std::fs::read_to_string(&args.policies)
        .with_context(|| format!("cannot read policy file {}", args.policies.display()))?;
    let policies = parse_policy_file(&args.policies.display().to_string(), &policy_text)?;
    let tokens = layout.write()?;
    let operator = token(&tokens, "operator").to_string();

    let dir = std::path::absolute(&layout.dir).unwrap_or(layout.dir.clone());
    println!("callvault dev cluster in {}", dir.display());
    println!(
        "  nodes (gRPC, every role): {}",
        (1..=3)
            .map(|n| layout.addr(n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  dev tokens ({}):", dir.join("tokens.env").display());
    for (name, value) in &tokens {
        println!("    {name}={value}");
    }
    if args.init_only {
        return Ok(());
    }

    let exe = std::env::current_exe().context("cannot find the callvault binary")?;
    let mut children = Vec::new();
    for node in 1..=3 {
        let log_path = layout.dir.join(format!("node-{node}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut command = Command::new(&exe);
        // If `callvault dev` itself dies, the nodes stop too instead of running on orphaned.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches only the child being spawned.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = command
            .args(["serve", "--config"])
            .arg(layout.config(node))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start a node")?;
        children.push(child);
    }
    let mut nodes = Nodes(children);
    form_cluster(&layout, &operator).await?;

    let channel = super::connect(&layout.addr(1), Duration::from_secs(30)).await?;
    let operator_key = super::client::load_signing_key(&layout.principal_key("operator"))?;
    let summary =
        super::policy_admin::put_policies(channel, &operator, Some(operator_key), &policies)
            .await?;
    println!(
        "policies from {}: {} put in force, {} unchanged",
        args.policies.display(),
        summary.installed.len(),
        summary.unchanged.len()
    );
    println!(
        "\nready. try:\n  source {env}\n  callvault load --token $CALLVAULT_DEV_PLATFORM_TOKEN --registry-token $CALLVAULT_DEV_REGISTRY_TOKEN --calls 200\n  callvault status US-TX --token $CALLVAULT_DEV_AGENCY_TX_TOKEN\n  CALLVAULT_TOKEN=$CALLVAULT_DEV_AUDITOR_TOKEN callvault audit verify --node {node} --vkey \"$(cat {vkey})\" --origin {DEV_AUDIT_ORIGIN}\n\nCtrl-C stops the cluster (data stays in {dir}).",
        env = dir.join("tokens.env").display(),
        node = layout.addr(1),
        vkey = dir.join("audit.vkey").display(),
        dir = dir.display()
    );

    // Until Ctrl-C, or until a node dies (then stop the rest and say so).
    loop {
        tokio::select! {
            _ = crate::serve::shutdown_signal() => {
                println!("stopping the cluster");
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (i, child) in nodes.0.iter_mut().enumerate() {
                    if let Ok(Some(status)) = child.try_wait() {
                        bail!(
                            "node {} exited ({status}); see {}",
                            i + 1,
                            layout.dir.join(format!("node-{}.log", i + 1)).display()
                        );
                    }
                }
            }
        }
    }
    drop(nodes);
    Ok(())
}
