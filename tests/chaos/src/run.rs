//! One seed, start to finish: a fresh cluster in fresh namespaces, the clients and the monitor
//! running while the nemesis walks its schedule, then healing, final reads and the checks.
//!
//! A run lives on a thread of its own that moves into the clients' namespace before it builds
//! its tokio runtime, so every client connection and every command the checks run (`callvault
//! audit verify`) starts from there. The namespaces, processes and mounts are removed when the
//! run ends, also when it panics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::check::{Checked, history as hcheck, state};
use crate::cluster::Cluster;
use crate::history::{self, History, Kind, Op};
use crate::nemesis::{Done, Fault, Nemesis, schedule};
use crate::net::Network;
use crate::workload::Workload;

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub seed: u64,
    pub nodes: usize,
    pub faults: Vec<Fault>,
    pub steps: usize,
    /// Concurrent clients.
    pub clients: u32,
    pub pace: crate::nemesis::Pace,
}

impl Plan {
    /// The command that runs this plan again.
    pub fn replay_command(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(|f| f.name()).collect();
        format!(
            "scripts/chaos run --seed {} --nodes {} --steps {} --faults {}",
            self.seed,
            self.nodes,
            self.steps,
            faults.join(",")
        )
    }

    /// Whether the plan needs the binary built with failpoints.
    pub fn needs_failpoints(&self) -> bool {
        self.faults.iter().any(|f| matches!(f, Fault::Crash(_)))
    }
}

/// What one seed did and found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedReport {
    pub plan: Plan,
    pub dir: PathBuf,
    pub took_s: f64,
    pub steps: Vec<Done>,
    /// Completed operations by name and completion kind.
    pub operations: BTreeMap<String, BTreeMap<String, usize>>,
    pub acknowledged_calls_checked: usize,
    pub checks: Vec<Checked>,
    /// A failure of the run itself (the cluster never formed, the harness broke).
    pub error: Option<String>,
}

impl SeedReport {
    /// Every anomaly: of the checks, of the steps, and of the run.
    pub fn anomalies(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .checks
            .iter()
            .flat_map(|c| c.anomalies.iter().map(move |a| format!("{}: {a}", c.name)))
            .collect();
        for step in &self.steps {
            out.extend(step.problems.iter().map(|p| format!("{}: {p}", step.fault)));
        }
        out.extend(self.error.clone());
        out
    }

    pub fn passed(&self) -> bool {
        self.anomalies().is_empty()
    }
}

/// Binaries of the run.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub normal: PathBuf,
    /// Built with `--features failpoints`; needed by plans with crash faults.
    pub failpoints: Option<PathBuf>,
}

/// Runs `plan` on a thread of its own; its report (also written to `out/seed-<seed>/`).
pub fn run_plan(plan: Plan, bins: Binaries, out: PathBuf) -> SeedReport {
    let seed = plan.seed;
    let handle = std::thread::spawn(move || {
        let dir = out.join(format!("seed-{}", plan.seed));
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let mut report = SeedReport {
            plan: plan.clone(),
            dir: dir.clone(),
            took_s: 0.0,
            steps: Vec::new(),
            operations: BTreeMap::new(),
            acknowledged_calls_checked: 0,
            checks: Vec::new(),
            error: None,
        };
        let result = std::fs::create_dir_all(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| run_in_namespaces(&plan, &bins, &dir, &mut report));
        if let Err(e) = result {
            report.error = Some(format!("{e:#}"));
        }
        report.took_s = started.elapsed().as_secs_f64();
        let _ = std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        );
        report
    });
    handle.join().unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        panic!("the run of seed {seed} panicked: {message}")
    })
}

fn run_in_namespaces(
    plan: &Plan,
    bins: &Binaries,
    dir: &std::path::Path,
    report: &mut SeedReport,
) -> anyhow::Result<()> {
    let removed = crate::net::remove_leftovers(std::path::Path::new(crate::cluster::VOLUME_ROOT));
    if !removed.is_empty() {
        eprintln!("removed what crashed runs left behind: {removed:?}");
    }
    let bin = if plan.needs_failpoints() {
        bins.failpoints.clone().ok_or_else(|| {
            anyhow::anyhow!("the plan has crash faults: CALLVAULT_FAILPOINTS_BIN must name a build with --features failpoints")
        })?
    } else {
        bins.normal.clone()
    };
    let net = Network::create(&crate::net::new_tag(), plan.nodes)?;
    net.enter_client_ns()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cluster = {
        let _context = runtime.enter();
        Cluster::create(net, plan.nodes, &bin, dir)?
    };
    runtime.block_on(drive(plan, cluster, &bin, dir, report))
}

async fn drive(
    plan: &Plan,
    mut cluster: Cluster,
    bin: &std::path::Path,
    dir: &std::path::Path,
    report: &mut SeedReport,
) -> anyhow::Result<()> {
    cluster.start_all(Duration::from_secs(120)).await?;
    crate::setup::put_policies(&cluster.clients).await?;
    let history = History::create(&dir.join("history.jsonl"))?;
    let workload = Workload::new(cluster.clients.clone(), history.clone(), plan.seed);
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for process in 0..plan.clients {
        let (workload, stopped) = (workload.clone(), stopped.clone());
        tasks.push(tokio::spawn(
            async move { workload.run(process, stopped).await },
        ));
    }
    let monitor = tokio::spawn(crate::monitor::watch(
        cluster.clients.clone(),
        started,
        stopped.clone(),
    ));
    let mut nemesis = Nemesis {
        cluster: &mut cluster,
        history: history.clone(),
        workload: workload.clone(),
        started,
        settle: plan.pace.settle(),
    };
    for step in schedule(plan.seed, &plan.faults, plan.steps, plan.pace) {
        eprintln!("seed {}: {}", plan.seed, step.fault.name());
        let done = nemesis.run(&step).await;
        report.steps.push(done);
    }
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let stopped_at = history.now();
    let observed = monitor.await?;
    let run = Finish {
        plan,
        workload: &workload,
        history: &history,
        bin,
        dir,
        stopped_at,
    };
    run.finish(&mut cluster, observed, report).await
}

/// What is left once the nemesis is done: heal, read every call once more, check.
struct Finish<'a> {
    plan: &'a Plan,
    workload: &'a Workload,
    history: &'a History,
    bin: &'a std::path::Path,
    dir: &'a std::path::Path,
    /// When the clients stopped (history time).
    stopped_at: u64,
}

impl Finish<'_> {
    async fn finish(
        &self,
        cluster: &mut Cluster,
        observed: crate::monitor::Observed,
        report: &mut SeedReport,
    ) -> anyhow::Result<()> {
        let live = self.heal(cluster, report).await?;
        // The final reads, recorded like any other operation, so the checks see them.
        let final_from = self.history.now();
        let calls = self
            .workload
            .known
            .lock()
            .expect("known lock")
            .calls
            .clone();
        for (i, call) in calls.iter().enumerate() {
            final_reads(self.workload, call, &live, i).await;
        }
        self.history.flush();
        let completed = history::complete(&self.history.events());
        report.operations = count(&completed);
        report.checks.extend(hcheck::linearizability(&completed));
        let (acked, n) = hcheck::acknowledged_calls(&completed, final_from);
        report.checks.push(acked);
        report.acknowledged_calls_checked = n;
        report.checks.push(hcheck::privileged_at_ingest(&completed));
        report.checks.push(hcheck::deadlines(&completed));
        report
            .checks
            .push(hcheck::progress(&completed, self.stopped_at));
        let clients = &cluster.clients;
        report.checks.push(state::digests(clients, &live).await);
        let dump = self.dir.join("audit.txt");
        report
            .checks
            .push(state::audit_accounting(clients, live[0], &completed, &dump).await);
        report
            .checks
            .push(state::audit_log(clients, &live, self.bin, self.dir, &observed).await);
        report.checks.push(state::one_leader_per_term(&observed));
        // Stop the nodes so everything they wrote is on their volumes, then scan them.
        for node in &mut cluster.nodes {
            node.kill();
        }
        let volumes: Vec<PathBuf> = cluster
            .nodes
            .iter()
            .map(|n| n.data_dir().to_path_buf())
            .collect();
        report.checks.push(state::no_plaintext(&volumes, &calls));
        std::fs::write(
            self.dir.join("monitor.json"),
            serde_json::to_string(&observed)?,
        )?;
        Ok(())
    }

    /// Lifts every fault, restarts what stopped and waits for the nodes; the ready ones.
    async fn heal(
        &self,
        cluster: &mut Cluster,
        report: &mut SeedReport,
    ) -> anyhow::Result<Vec<usize>> {
        let mut problems = Vec::new();
        Nemesis {
            cluster,
            history: self.history.clone(),
            workload: self.workload.clone(),
            started: Instant::now(),
            settle: Duration::ZERO,
        }
        .heal_all(&mut problems)
        .await?;
        let all: Vec<usize> = (1..=self.plan.nodes).collect();
        if let Err(e) = cluster.wait_ready(&all, Duration::from_secs(120)).await {
            problems.push(format!("after healing: {e:#}"));
        }
        let mut live = Vec::new();
        for id in all {
            if cluster.clients.is_ready(id).await {
                live.push(id);
            }
        }
        if !problems.is_empty() {
            report.steps.push(Done {
                fault: "final heal".into(),
                detail: format!("ready: {live:?}"),
                started_s: 0.0,
                took_s: 0.0,
                problems,
                notes: Vec::new(),
            });
        }
        if live.is_empty() {
            anyhow::bail!("no node is ready after healing");
        }
        Ok(live)
    }
}

/// A call's status (and, for Texas, its audio) read after healing, from the first ready node
/// that answers.
async fn final_reads(
    workload: &Workload,
    call: &crate::workload::CallSpec,
    live: &[usize],
    i: usize,
) {
    let (jurisdiction, id) = (call.jurisdiction.to_string(), call.id.clone());
    let reads = [
        Some(Op::Status {
            jurisdiction: jurisdiction.clone(),
            call: id.clone(),
        }),
        (call.jurisdiction == crate::workload::TX).then_some(Op::Playback {
            jurisdiction,
            call: id,
        }),
    ];
    for op in reads.into_iter().flatten() {
        for attempt in 0..live.len() {
            let node = live[(i + attempt) % live.len()];
            let (kind, out) = workload.execute(1000, node, op.clone()).await;
            if kind == Kind::Ok || out.code() == Some("NotFound") {
                break;
            }
        }
    }
}

fn count(completed: &[history::Completed]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for c in completed {
        let kind = match c.kind {
            Kind::Ok => "ok",
            Kind::Fail => "fail",
            Kind::Info => "unknown",
            Kind::Invoke => "invoke",
        };
        *out.entry(c.op.name().into())
            .or_default()
            .entry(kind.into())
            .or_default() += 1;
    }
    out
}
