//! `callvault-chaos`: the fault suite's runner. `scripts/chaos` builds what it needs and runs it.
//!
//! - `bounded`: CI's mode — a few seeds that together inject every fault and crash at every
//!   failpoint at least once; exits non-zero, printing each failing seed's replay command, if
//!   any check finds an anomaly.
//! - `long --duration 60m --report FILE`: seed after seed, each with every fault but the known
//!   defects (`--with-known-defects` adds them), until the time is up; writes a markdown report
//!   with per-seed schedules, operations, faults and checks, rewritten after every seed.
//! - `run --seed N …`: one seed (what the replay commands call).
//! - `check --history FILE`: the history checks on a recorded history.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use callvault_chaos::nemesis::{Failpoint, Fault, Pace};
use callvault_chaos::report;
use callvault_chaos::run::{Binaries, Plan, SeedReport, run_plan};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "callvault-chaos", about = "The callvault fault suite")]
struct Cli {
    /// Where runs keep their histories, logs and reports.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// CI's bounded mode.
    Bounded,
    /// Seeds until `duration` is up, then a markdown report.
    Long {
        /// e.g. 60m, 90s, 2h.
        #[arg(long, value_parser = parse_duration)]
        duration: Duration,
        /// The report file.
        #[arg(long)]
        report: PathBuf,
        /// The first seed (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Also inject the faults of known, unfixed defects (their seeds then fail).
        #[arg(long)]
        with_known_defects: bool,
    },
    /// One seed.
    Run {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Steps (default: one per fault).
        #[arg(long)]
        steps: Option<usize>,
        /// Faults by name, comma-separated (default: all, failpoints included).
        #[arg(long, value_delimiter = ',')]
        faults: Vec<String>,
    },
    /// The history checks on a recorded history.jsonl.
    Check {
        #[arg(long)]
        history: PathBuf,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit in {text}: use s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

fn all_faults() -> Vec<Fault> {
    let mut faults = Fault::NEMESES.to_vec();
    faults.extend(Failpoint::ALL.iter().map(|&fp| Fault::Crash(fp)));
    faults
}

fn fault_by_name(name: &str) -> Option<Fault> {
    all_faults().into_iter().find(|f| f.name() == name)
}

fn binaries() -> Binaries {
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    Binaries {
        normal: env("CALLVAULT_BIN").unwrap_or_else(|| here.join("callvault")),
        failpoints: env("CALLVAULT_FAILPOINTS_BIN"),
    }
}

fn out_dir(cli: &Option<PathBuf>) -> PathBuf {
    cli.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("chaos")
    })
}

/// Faults that show anomalies known and not yet fixed on this branch, each with the finding.
/// The bounded mode leaves them out, so that it gates what is fixed; `tests/defects.rs`
/// keeps one ignored, failing test for each; the long mode runs them only when asked.
const KNOWN_DEFECTS: &[(Fault, &str)] = &[];

fn known(fault: Fault) -> bool {
    KNOWN_DEFECTS.iter().any(|(f, _)| *f == fault)
}

/// The faults a mode leaves out, and why, for its output and its report.
fn left_out_note(with_known_defects: bool) -> String {
    if with_known_defects || KNOWN_DEFECTS.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = KNOWN_DEFECTS
        .iter()
        .map(|(fault, why)| format!("- left out: `{}` ({why})\n", fault.name()))
        .collect();
    format!("Known defects, not injected:\n\n{}\n", lines.concat())
}

/// The bounded mode's plans: every nemesis in one seed, every failpoint in another, quickly.
fn bounded_plans() -> Vec<Plan> {
    let nemeses: Vec<Fault> = Fault::NEMESES.into_iter().filter(|f| !known(*f)).collect();
    let crashes: Vec<Fault> = Failpoint::ALL
        .iter()
        .map(|&fp| Fault::Crash(fp))
        .filter(|f| !known(*f))
        .collect();
    [(1501, nemeses), (1502, crashes)]
        .into_iter()
        .map(|(seed, faults)| Plan {
            seed,
            nodes: 3,
            steps: faults.len(),
            faults,
            clients: 8,
            pace: Pace::Quick,
        })
        .collect()
}

fn summarize(reports: &[SeedReport]) -> ExitCode {
    let failed: Vec<&SeedReport> = reports.iter().filter(|r| !r.passed()).collect();
    for r in &failed {
        eprintln!("\nseed {} FAILED ({}):", r.plan.seed, r.dir.display());
        for a in r.anomalies().iter().take(20) {
            eprintln!("  - {a}");
        }
        eprintln!("  replay: {}", r.plan.replay_command());
    }
    println!(
        "chaos: {} passed, {} failed",
        reports.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run_one(plan: Plan, out: &std::path::Path) -> SeedReport {
    let started = Instant::now();
    eprintln!(
        "== seed {} ({} nodes, {} steps)",
        plan.seed, plan.nodes, plan.steps
    );
    let report = run_plan(plan, binaries(), out.to_path_buf());
    eprintln!(
        "== seed {}: {} in {:.0} s",
        report.plan.seed,
        if report.passed() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    report
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = out_dir(&cli.out);
    match cli.mode {
        Mode::Bounded => {
            let left_out = left_out_note(false);
            eprint!("{left_out}");
            let reports: Vec<SeedReport> = bounded_plans()
                .into_iter()
                .map(|p| run_one(p, &out))
                .collect();
            let text = report::markdown("callvault fault suite: bounded mode", &reports, &left_out);
            let _ = std::fs::write(out.join("bounded-report.md"), text);
            summarize(&reports)
        }
        Mode::Long {
            duration,
            report: path,
            seed,
            nodes,
            with_known_defects,
        } => {
            let started = Instant::now();
            let mut seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs())
            });
            let faults: Vec<Fault> = all_faults()
                .into_iter()
                .filter(|f| with_known_defects || !known(*f))
                .collect();
            let left_out = left_out_note(with_known_defects);
            eprint!("{left_out}");
            let mut reports = Vec::new();
            while started.elapsed() < duration {
                let plan = Plan {
                    seed,
                    nodes,
                    steps: faults.len() + 4,
                    faults: faults.clone(),
                    clients: 8,
                    pace: Pace::Steady,
                };
                reports.push(run_one(plan, &out));
                let header = format!(
                    "Long mode: {} of {} elapsed; binary `{}`.\n\n{left_out}",
                    humanize(started.elapsed()),
                    humanize(duration),
                    binaries().normal.display()
                );
                let text = report::markdown("callvault fault suite: long mode", &reports, &header);
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("cannot write {}: {e}", path.display());
                }
                seed += 1;
            }
            summarize(&reports)
        }
        Mode::Run {
            seed,
            nodes,
            steps,
            faults,
        } => {
            let faults = if faults.is_empty() {
                all_faults()
            } else {
                match faults.iter().map(|f| fault_by_name(f).ok_or(f)).collect() {
                    Ok(faults) => faults,
                    Err(name) => {
                        let known: Vec<String> = all_faults().iter().map(|f| f.name()).collect();
                        eprintln!("unknown fault {name}; known: {}", known.join(", "));
                        return ExitCode::from(2);
                    }
                }
            };
            let plan = Plan {
                seed,
                nodes,
                steps: steps.unwrap_or(faults.len()),
                faults,
                clients: 8,
                pace: Pace::Steady,
            };
            let reports = vec![run_one(plan, &out)];
            let text = report::markdown("callvault fault suite: one seed", &reports, "");
            let _ = std::fs::write(reports[0].dir.join("report.md"), text);
            summarize(&reports)
        }
        Mode::Check { history } => {
            let events = match callvault_chaos::history::read(&history) {
                Ok(events) => events,
                Err(e) => {
                    eprintln!("cannot read {}: {e}", history.display());
                    return ExitCode::from(2);
                }
            };
            let completed = callvault_chaos::history::complete(&events);
            let mut checks = callvault_chaos::check::history::linearizability(&completed);
            checks.push(callvault_chaos::check::history::privileged_at_ingest(
                &completed,
            ));
            checks.push(callvault_chaos::check::history::deadlines(&completed));
            let mut bad = 0;
            for check in &checks {
                println!(
                    "{}: {} ({})",
                    check.name,
                    if check.passed() { "passed" } else { "FAILED" },
                    check.scope
                );
                for a in &check.anomalies {
                    println!("  - {a}");
                }
                bad += usize::from(!check.passed());
            }
            println!("chaos checks: {} passed, {bad} failed", checks.len() - bad);
            if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn humanize(d: Duration) -> String {
    format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
}
