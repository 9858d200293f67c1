//! The nemesis: a schedule of faults drawn from a seed, and their execution against the
//! cluster. Each step injects one fault, holds it, heals it, and lets the cluster settle before
//! the next.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::cluster::{Clients, Cluster};
use crate::node::Exit;

/// A failpoint of the binary built with `--features failpoints`, and what makes a node reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failpoint {
    /// Ingest: the chunks are on the shards, the commit is not proposed yet.
    IngestBeforeCommit,
    /// Leader: the command applied, the proposer has not answered yet.
    ApplyBeforeAck,
    /// Shredder: keys compacted away, no fresh snapshot yet.
    ShredAfterCompact,
    /// Shredder: fresh snapshot, log not purged yet.
    ShredAfterSnapshot,
    /// Shredder: log purged, receipt not proposed yet.
    ShredBeforeReceipt,
    /// Snapshot install: unpacked into the next generation, pointer not switched.
    SnapshotInstallBeforeSwitch,
    /// Snapshot install: pointer switched, the received file not kept yet.
    SnapshotInstallAfterSwitch,
    /// Log purge: the purge point written, openraft not told yet. The node is made to catch up
    /// by snapshot, so this is the purge through the snapshot it receives (openraft issues it
    /// while the state machine installs; long run seed 15101).
    LogPurgeAfterWrite,
    /// Not a crash: the leader applies a proposal and its reply is lost (UNAVAILABLE), one time
    /// in four, while the fault holds. Callers retry.
    ProposeReplyLost,
}

impl Failpoint {
    pub const ALL: [Failpoint; 9] = [
        Failpoint::IngestBeforeCommit,
        Failpoint::ApplyBeforeAck,
        Failpoint::ShredAfterCompact,
        Failpoint::ShredAfterSnapshot,
        Failpoint::ShredBeforeReceipt,
        Failpoint::SnapshotInstallBeforeSwitch,
        Failpoint::SnapshotInstallAfterSwitch,
        Failpoint::LogPurgeAfterWrite,
        Failpoint::ProposeReplyLost,
    ];

    /// Its name in the binary (`fail_point!`).
    pub fn name(self) -> &'static str {
        match self {
            Failpoint::IngestBeforeCommit => "ingest-before-commit",
            Failpoint::ApplyBeforeAck => "apply-before-ack",
            Failpoint::ShredAfterCompact => "shred-after-compact",
            Failpoint::ShredAfterSnapshot => "shred-after-snapshot",
            Failpoint::ShredBeforeReceipt => "shred-before-receipt",
            Failpoint::SnapshotInstallBeforeSwitch => "snapshot-install-before-switch",
            Failpoint::SnapshotInstallAfterSwitch => "snapshot-install-after-switch",
            Failpoint::LogPurgeAfterWrite => "log-purge-after-write",
            Failpoint::ProposeReplyLost => "propose-reply-lost",
        }
    }

    /// Whether only a forced shredder round reaches it (a purge, since expiries wait for the
    /// ordinary snapshot): the step provokes one.
    pub fn needs_a_purge(self) -> bool {
        matches!(
            self,
            Failpoint::ShredAfterCompact | Failpoint::ShredAfterSnapshot
        )
    }

    /// Whether reaching it crashes the node (the others change what the node answers).
    pub fn crashes(self) -> bool {
        self != Failpoint::ProposeReplyLost
    }

    /// The `FAILPOINTS` value that arms it.
    fn spec(self) -> String {
        let action = if self.crashes() {
            "return"
        } else {
            "25%return"
        };
        format!("{}={action}", self.name())
    }
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// One node cut off from the others.
    Isolate,
    /// A random majority and minority cut apart.
    Halves,
    /// One node hears nobody; the others hear it.
    OneWay,
    /// Two sides that only a bridge node hears both of.
    Bridge,
    /// One node cut off and reconnected every few hundred milliseconds.
    Flapping,
    /// kill -9, then a restart.
    Kill,
    /// Pause with SIGSTOP, resume with SIGCONT.
    Pause,
    /// kill -9, its volume wiped, a restart.
    Wipe,
    /// The wipe that can cost a quorum its memory: a node is cut off, another is wiped while
    /// it is, then the leader is cut off and the stale node may ask the wiped one for a vote.
    WipeThenSwap,
    /// The node's wall clock moved by days (libfaketime).
    ClockSkew,
    /// Its volume filled to the last byte, then freed.
    DiskFull,
    /// A voter removed from the membership and added back.
    Membership,
    /// A node restarted with a failpoint armed, crashing there.
    Crash(Failpoint),
}

impl Fault {
    /// Every fault but the failpoints.
    pub const NEMESES: [Fault; 12] = [
        Fault::Isolate,
        Fault::Halves,
        Fault::OneWay,
        Fault::Bridge,
        Fault::Flapping,
        Fault::Kill,
        Fault::Pause,
        Fault::Wipe,
        Fault::WipeThenSwap,
        Fault::ClockSkew,
        Fault::DiskFull,
        Fault::Membership,
    ];

    /// A short name for reports.
    pub fn name(self) -> String {
        match self {
            Fault::Crash(fp) if fp.crashes() => format!("crash@{}", fp.name()),
            Fault::Crash(fp) => format!("failpoint@{}", fp.name()),
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{other:?}")),
        }
    }
}

/// One step of a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub fault: Fault,
    /// How long the fault is held, milliseconds.
    pub hold_ms: u64,
    /// Random choices of the step (targets, offsets), drawn when it runs from this seed.
    pub seed: u64,
}

/// How long faults hold and the cluster settles after each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pace {
    /// CI's bounded mode: 3 to 6 s a fault, 3 s to settle.
    Quick,
    /// The long mode and replays: 4 to 9 s a fault, 4 s to settle.
    Steady,
}

impl Pace {
    fn hold_ms(self) -> std::ops::Range<u64> {
        match self {
            Pace::Quick => 3_000..6_000,
            Pace::Steady => 4_000..9_000,
        }
    }

    /// The pause after each heal.
    pub fn settle(self) -> Duration {
        match self {
            Pace::Quick => Duration::from_secs(3),
            Pace::Steady => Duration::from_secs(4),
        }
    }
}

/// The schedule of `seed`: every fault of `faults` once, in a seeded order, then random ones
/// from `faults` until `steps` steps.
pub fn schedule(seed: u64, faults: &[Fault], steps: usize, pace: Pace) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<Fault> = faults.to_vec();
    order.shuffle(&mut rng);
    while order.len() < steps {
        order.push(faults[rng.random_range(0..faults.len())]);
    }
    order
        .into_iter()
        .map(|fault| Step {
            fault,
            hold_ms: rng.random_range(pace.hold_ms()),
            seed: rng.random(),
        })
        .collect()
}

/// What a step did, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub fault: String,
    pub detail: String,
    pub started_s: f64,
    pub took_s: f64,
    /// Problems the step itself saw (a failpoint never reached, a node that did not recover).
    pub problems: Vec<String>,
    /// What the step saw that is allowed (a node that stopped on a full disk).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// How long the cluster may take to have every node a ready voter again after a heal.
const RECOVERY: Duration = Duration::from_secs(60);

/// Runs the nemesis against `cluster`.
pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    /// The run's history, to see that the workload makes progress where a step needs it.
    /// The run's workload, for the operations a step makes itself (their calls get final
    /// reads and checks like every other).
    pub workload: crate::workload::Workload,
    pub history: crate::history::History,
    pub started: Instant,
    /// How long the cluster settles after each heal.
    pub settle: Duration,
}

/// The history's process number for the operations a step makes itself (the workload's
/// clients are numbered from 0).
const PURGE_PROCESS: u32 = 9_000;

impl Nemesis<'_> {
    fn clients(&self) -> Clients {
        self.cluster.clients.clone()
    }

    /// The leader as the running nodes report it.
    async fn leader(&mut self) -> Option<usize> {
        for id in 1..=self.cluster.size() {
            if !self.cluster.node(id).is_running() {
                continue;
            }
            if let Some(status) = self.cluster.clients.status(id).await
                && status.leader_id != 0
            {
                return Some(status.leader_id as usize);
            }
        }
        None
    }

    /// Runs one step and returns what it did.
    pub async fn run(&mut self, step: &Step) -> Done {
        let begun = Instant::now();
        let mut rng = StdRng::seed_from_u64(step.seed);
        let hold = Duration::from_millis(step.hold_ms);
        let mut problems = Vec::new();
        let detail = match self.inject(step.fault, hold, &mut rng, &mut problems).await {
            Ok(detail) => detail,
            Err(e) => {
                problems.push(format!("the step failed: {e:#}"));
                String::new()
            }
        };
        let mut exits = Vec::new();
        if let Err(e) = self.heal_all(&mut exits).await {
            problems.push(format!("healing failed: {e:#}"));
        }
        // A node may stop on a full disk (fail-stop); anywhere else, stopping is a crash.
        let notes = if step.fault == Fault::DiskFull {
            exits
        } else {
            problems.extend(exits);
            Vec::new()
        };
        tokio::time::sleep(self.settle).await;
        // Every fault stays within what the cluster must survive (a minority at a time), so after
        // the heal every node must be a caught-up voter again before the next fault.
        let all: Vec<usize> = (1..=self.cluster.size()).collect();
        if let Err(e) = self.cluster.wait_ready(&all, RECOVERY).await {
            problems.push(format!("not recovered after the heal: {e:#}"));
        }
        Done {
            fault: step.fault.name(),
            detail,
            started_s: (begun - self.started).as_secs_f64(),
            took_s: begun.elapsed().as_secs_f64(),
            problems,
            notes,
        }
    }

    /// Lifts every fault: partitions, pauses, skews, full disks; restarts nodes that stopped,
    /// noting in `exits` those that stopped by themselves.
    pub async fn heal_all(&mut self, exits: &mut Vec<String>) -> anyhow::Result<()> {
        self.cluster.net.heal()?;
        for id in 1..=self.cluster.size() {
            let node = self.cluster.node(id);
            node.resume();
            node.set_clock_offset("+0")?;
            node.free_disk();
            if !node.is_running() {
                if let Some(exit) = node.last_exit.clone() {
                    exits.push(format!(
                        "node {id} had exited by itself ({exit:?}); restarted"
                    ));
                }
                node.start()?;
            }
        }
        Ok(())
    }

    async fn inject(
        &mut self,
        fault: Fault,
        hold: Duration,
        rng: &mut StdRng,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<String> {
        let n = self.cluster.size();
        let all: BTreeSet<usize> = (1..=n).collect();
        let leader = self.leader().await;
        // Faults aimed at one node hit the leader half the time: that is where they hurt.
        let target = match leader {
            Some(l) if rng.random_bool(0.5) => l,
            _ => rng.random_range(1..=n),
        };
        match fault {
            Fault::Isolate | Fault::OneWay => {
                let others: BTreeSet<usize> =
                    all.iter().copied().filter(|&i| i != target).collect();
                self.cluster.net.block(target, &others)?;
                if fault == Fault::Isolate {
                    for &other in &others {
                        self.cluster.net.block(other, &BTreeSet::from([target]))?;
                    }
                }
                tokio::time::sleep(hold).await;
                Ok(format!("node {target} (leader {leader:?})"))
            }
            Fault::Halves | Fault::Bridge => {
                let mut order: Vec<usize> = all.iter().copied().collect();
                order.shuffle(rng);
                let (a, b, bridge): (Vec<usize>, Vec<usize>, Option<usize>) =
                    if fault == Fault::Bridge {
                        let bridge = order.pop();
                        let half = order.len() / 2;
                        (order[..half].to_vec(), order[half..].to_vec(), bridge)
                    } else {
                        let minority = n / 2;
                        (order[..minority].to_vec(), order[minority..].to_vec(), None)
                    };
                self.cut(&a, &b)?;
                tokio::time::sleep(hold).await;
                Ok(format!("{a:?} | {b:?} (bridge {bridge:?})"))
            }
            Fault::Flapping => {
                let others: BTreeSet<usize> =
                    all.iter().copied().filter(|&i| i != target).collect();
                let until = Instant::now() + hold;
                let mut flips = 0;
                let none = BTreeSet::new();
                while Instant::now() < until {
                    let cut = flips % 2 == 0;
                    self.cluster
                        .net
                        .block(target, if cut { &others } else { &none })?;
                    for &other in &others {
                        let from = if cut {
                            BTreeSet::from([target])
                        } else {
                            BTreeSet::new()
                        };
                        self.cluster.net.block(other, &from)?;
                    }
                    flips += 1;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
                }
                Ok(format!("node {target}, {flips} flips"))
            }
            Fault::Kill => {
                self.cluster.node(target).kill();
                tokio::time::sleep(hold).await;
                self.cluster.node(target).start()?;
                Ok(format!("node {target} (leader {leader:?})"))
            }
            Fault::Pause => {
                self.cluster.node(target).pause();
                tokio::time::sleep(hold).await;
                self.cluster.node(target).resume();
                Ok(format!("node {target} (leader {leader:?})"))
            }
            Fault::Wipe => {
                let node = self.cluster.node(target);
                node.kill();
                node.wipe()?;
                tokio::time::sleep(hold / 2).await;
                self.cluster.node(target).start()?;
                tokio::time::sleep(hold / 2).await;
                Ok(format!("node {target} (leader {leader:?})"))
            }
            Fault::WipeThenSwap => self.wipe_then_swap(leader, rng, hold).await,
            Fault::ClockSkew => {
                let offset = if rng.random_bool(0.7) {
                    format!("+{}h", rng.random_range(25..96))
                } else {
                    format!("-{}h", rng.random_range(2..48))
                };
                // The leader's clock is the one that drives sweeps today.
                let target = leader.filter(|_| rng.random_bool(0.8)).unwrap_or(target);
                self.cluster.node(target).set_clock_offset(&offset)?;
                // Long enough for calls to fall due while it lasts.
                tokio::time::sleep(hold * 2).await;
                Ok(format!("node {target} {offset} (leader {leader:?})"))
            }
            Fault::DiskFull => {
                self.cluster.node(target).fill_disk()?;
                tokio::time::sleep(hold).await;
                self.cluster.node(target).free_disk();
                // A node must come back by itself once its disk has room again.
                let recovered = self.wait_ready(target, Duration::from_secs(30)).await;
                if !recovered && self.cluster.node(target).is_running() {
                    problems.push(format!(
                        "node {target} was not a ready voter 30 s after its disk was freed"
                    ));
                }
                Ok(format!("node {target} (leader {leader:?})"))
            }
            Fault::Membership => self.remove_and_readd(rng, hold, problems).await,
            Fault::Crash(fp) => self.crash_at(fp, leader, rng, hold, problems).await,
        }
    }

    /// Cuts every node of `a` from every node of `b`, both ways.
    fn cut(&self, a: &[usize], b: &[usize]) -> anyhow::Result<()> {
        let (a_set, b_set): (BTreeSet<usize>, BTreeSet<usize>) =
            (a.iter().copied().collect(), b.iter().copied().collect());
        for &x in a {
            self.cluster.net.block(x, &b_set)?;
        }
        for &y in b {
            self.cluster.net.block(y, &a_set)?;
        }
        Ok(())
    }

    async fn wait_ready(&mut self, id: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.cluster.clients.is_ready(id).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    /// The scenario in which a voter that forgot its vote can cost acknowledged writes: node Y
    /// is cut off and falls behind while leader X commits with C; C loses its volume; then X is
    /// cut off and C restarts next to Y alone. Unless the wiped C stays out of elections until it
    /// has caught up, it grants Y its vote and Y leads without X's acknowledged entries.
    async fn wipe_then_swap(
        &mut self,
        leader: Option<usize>,
        rng: &mut StdRng,
        hold: Duration,
    ) -> anyhow::Result<String> {
        let n = self.cluster.size();
        let x = leader.unwrap_or(1);
        let mut others: Vec<usize> = (1..=n).filter(|&i| i != x).collect();
        others.shuffle(rng);
        let (y, c) = (others[0], others[1]);
        let rest: Vec<usize> = (1..=n).filter(|&i| i != y).collect();
        let cut_at = self.history.now();
        self.cut(&[y], &rest)?;
        tokio::time::sleep(hold / 2).await;
        // Writes that only X and C hold are what a wrong vote loses: wait for a few.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.history.acked_writes_since(cut_at) < 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let acked = self.history.acked_writes_since(cut_at);
        let node = self.cluster.node(c);
        node.kill();
        node.wipe()?;
        self.cluster.net.heal()?;
        let rest: Vec<usize> = (1..=n).filter(|&i| i != x).collect();
        self.cut(&[x], &rest)?;
        self.cluster.node(c).start()?;
        tokio::time::sleep(hold).await;
        Ok(format!(
            "stale {y}; {acked} writes acknowledged without it; wiped {c}; leader {x} cut off"
        ))
    }

    /// Removes a voter and adds it back, again and again while the fault holds, through
    /// whichever node leads: membership entries land among shred receipts and other commands.
    async fn remove_and_readd(
        &mut self,
        rng: &mut StdRng,
        hold: Duration,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<String> {
        let n = self.cluster.size();
        let until = Instant::now() + hold;
        let mut cycles = Vec::new();
        while Instant::now() < until {
            let Some(leader) = self.leader().await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let candidates: Vec<usize> = (1..=n).filter(|&i| i != leader).collect();
            let target = candidates[rng.random_range(0..candidates.len())];
            // Added back with its volume: it must send its purge receipts before it leaves.
            let removal = callvault_proto::v1::RemoveMemberRequest {
                node_id: target as u64,
                ..Default::default()
            };
            if let Err(e) = self
                .change_membership(leader, |mut c| {
                    let r = removal.clone();
                    async move { c.remove_member(r).await }
                })
                .await
            {
                problems.push(format!("removing node {target}: {e}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
            let addition = callvault_proto::v1::AddMemberRequest {
                node_id: target as u64,
                addr: self.cluster.node(target).addr.clone(),
                learner_only: false,
            };
            if let Err(e) = self
                .change_membership(leader, |mut c| {
                    let r = addition.clone();
                    async move { c.add_member(r).await }
                })
                .await
            {
                problems.push(format!("adding node {target} back: {e}"));
                break;
            }
            cycles.push(target);
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
        }
        Ok(format!("removed and added back: {cycles:?}"))
    }

    /// Sends a membership change through `first`, then any other member, for up to 20 s (an
    /// election may be under way; any member forwards to the leader).
    async fn change_membership<F, Fut>(&self, first: usize, call: F) -> Result<(), tonic::Status>
    where
        F: Fn(
            callvault_proto::v1::cluster_client::ClusterClient<callvault_proto::auth::AuthChannel>,
        ) -> Fut,
        Fut: std::future::Future<
                Output = Result<tonic::Response<callvault_proto::v1::ClusterStatus>, tonic::Status>,
            >,
    {
        let n = self.cluster.size();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut attempt = 0;
        loop {
            let via = 1 + (first - 1 + attempt) % n;
            let client = callvault_proto::v1::cluster_client::ClusterClient::new(
                self.cluster.clients.as_principal(via, "operator"),
            );
            match call(client).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Restarts a node with `fp` armed, makes it reach the failpoint, checks that it crashed
    /// there, and restarts it clean.
    async fn crash_at(
        &mut self,
        fp: Failpoint,
        leader: Option<usize>,
        rng: &mut StdRng,
        hold: Duration,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<String> {
        if !fp.crashes() {
            return self.lose_replies(fp, hold, problems).await;
        }
        let n = self.cluster.size();
        let target = match fp {
            // Proposals reach the leader; the others' shredders and ingest work anywhere.
            Failpoint::ApplyBeforeAck => leader.unwrap_or(1),
            _ => {
                let others: Vec<usize> = (1..=n).filter(|&i| Some(i) != leader).collect();
                others[rng.random_range(0..others.len())]
            }
        };
        let spec = fp.spec();
        let node = self.cluster.node(target);
        node.kill();
        if matches!(
            fp,
            Failpoint::SnapshotInstallBeforeSwitch
                | Failpoint::SnapshotInstallAfterSwitch
                | Failpoint::LogPurgeAfterWrite
        ) {
            // Down long enough that the leader purges its log past this node's end: it catches
            // up by snapshot, and its first purge is the one that snapshot implies.
            if !self.wait_log_purged_past(target).await {
                problems.push(format!(
                    "the leader did not purge its log past node {target}'s end within 90 s"
                ));
            }
        }
        let node = self.cluster.node(target);
        let log_from = node.log_text().len();
        node.arm_failpoints(&spec);
        node.start()?;
        if fp.needs_a_purge() {
            self.provoke_purge(target, rng, problems).await;
        }
        let exit = if fp == Failpoint::ApplyBeforeAck {
            self.lead_until_exit(target).await
        } else {
            self.cluster
                .node(target)
                .wait_exit(Duration::from_secs(90))
                .await
        };
        let crashed = exit == Some(Exit::Signal(libc::SIGABRT))
            && self.cluster.node(target).log_text()[log_from..]
                .contains(&format!("failpoint {} reached", fp.name()));
        if !crashed {
            problems.push(format!(
                "failpoint {} on node {target} was not reached (exit {exit:?})",
                fp.name()
            ));
            self.cluster.node(target).kill();
        }
        self.cluster.node(target).start()?;
        Ok(format!("node {target} crashed at {}: {crashed}", fp.name()))
    }

    /// Makes the shredders of every node run a forced round (compaction, snapshot, log purge):
    /// a fresh number's one recording is purged by registering it, through a node other than
    /// `target` (which is starting with its failpoint armed). Expiries no longer force rounds.
    async fn provoke_purge(&mut self, target: usize, rng: &mut StdRng, problems: &mut Vec<String>) {
        let through = (1..=self.cluster.size())
            .find(|&id| id != target && self.cluster.node(id).is_running())
            .unwrap_or(target);
        // A commit can time out on a loaded machine: a few fresh numbers before giving up.
        for _ in 0..3 {
            let fresh = rng.random_range(0..8000);
            if self
                .workload
                .purge_a_fresh_number(PURGE_PROCESS, through, fresh)
                .await
            {
                return;
            }
        }
        problems.push(format!(
            "no purge to provoke the shredders: three calls to fresh numbers or their \
             registrations through node {through} did not commit"
        ));
    }

    /// A failpoint that changes what the leader answers (`propose-reply-lost`): armed on every
    /// node by restarting them one at a time, so whoever leads while it holds loses replies
    /// (making one chosen node lead is a race the other follower often wins); then every node
    /// is restarted clean. A step in which it never fired is a problem: it tested nothing.
    async fn lose_replies(
        &mut self,
        fp: Failpoint,
        hold: Duration,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<String> {
        let spec = fp.spec();
        let ids: Vec<usize> = (1..=self.cluster.size()).collect();
        let mut log_from = Vec::new();
        for &id in &ids {
            self.restart_ready(id, Some(&spec)).await?;
            log_from.push(self.cluster.node(id).log_text().len());
        }
        // Long enough for a few dozen proposals to reach the leader.
        tokio::time::sleep(hold * 3).await;
        let fired: Vec<usize> = ids
            .iter()
            .zip(&log_from)
            .filter(|&(&id, &from)| {
                self.cluster.node(id).log_text()[from..]
                    .contains(&format!("failpoint {} fired", fp.name()))
            })
            .map(|(&id, _)| id)
            .collect();
        if fired.is_empty() {
            problems.push(format!("failpoint {} never fired on any node", fp.name()));
        }
        for &id in &ids {
            self.restart_ready(id, None).await?;
        }
        Ok(format!("every node armed with {spec}; fired on {fired:?}"))
    }

    /// kill -9 and a restart (with `failpoints` armed, if any), then up to 30 s for the node to
    /// be ready, so that a rolling restart never takes down a quorum.
    async fn restart_ready(&mut self, id: usize, failpoints: Option<&str>) -> anyhow::Result<()> {
        let node = self.cluster.node(id);
        node.kill();
        if let Some(spec) = failpoints {
            node.arm_failpoints(spec);
        }
        node.start()?;
        self.wait_ready(id, Duration::from_secs(30)).await;
        Ok(())
    }

    /// Waits (up to 90 s) until the leader's log is purged past where node `id` stopped;
    /// whether it was.
    async fn wait_log_purged_past(&mut self, id: usize) -> bool {
        let clients = self.clients();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last_log = None;
        while Instant::now() < deadline {
            for other in (1..=self.cluster.size()).filter(|&i| i != id) {
                let Some(status) = clients.status(other).await else {
                    continue;
                };
                if last_log.is_none() {
                    // Node `id`'s end is at most what its peers had when it stopped.
                    last_log = Some(status.last_log_index);
                }
                if status.role == "leader" && Some(status.purged_index) > last_log {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    /// Pauses leaders other than `id` until `id` wins an election (at most twenty tries).
    /// Makes node `id` (armed with a failpoint only a leader reaches) lead until it exits, for
    /// up to three rounds: on a loaded machine another node may win the election after it.
    async fn lead_until_exit(&mut self, id: usize) -> Option<Exit> {
        for _ in 0..3 {
            self.make_leader(id).await;
            let exit = self
                .cluster
                .node(id)
                .wait_exit(Duration::from_secs(30))
                .await;
            if exit.is_some() {
                return exit;
            }
        }
        None
    }

    async fn make_leader(&mut self, id: usize) {
        for _ in 0..20 {
            if !self.wait_ready(id, Duration::from_secs(30)).await {
                return;
            }
            match self.leader().await {
                Some(l) if l == id => return,
                Some(l) => {
                    self.cluster.node(l).pause();
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    self.cluster.node(l).resume();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}
