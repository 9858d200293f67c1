//! The markdown report of a set of seeds: per seed its schedule, operations, faults, checks and
//! result, then the totals.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::run::SeedReport;

/// Totals over every seed.
#[derive(Debug, Default)]
pub struct Totals {
    pub seeds: usize,
    pub failed_seeds: usize,
    pub operations: usize,
    pub unknown_outcomes: usize,
    pub faults: BTreeMap<String, usize>,
    pub acknowledged_calls_checked: usize,
    pub anomalies: usize,
}

pub fn totals(seeds: &[SeedReport]) -> Totals {
    let mut t = Totals {
        seeds: seeds.len(),
        ..Totals::default()
    };
    for seed in seeds {
        if !seed.passed() {
            t.failed_seeds += 1;
        }
        for kinds in seed.operations.values() {
            t.operations += kinds.values().sum::<usize>();
            t.unknown_outcomes += kinds.get("unknown").copied().unwrap_or_default();
        }
        for step in &seed.steps {
            if step.fault != "final heal" {
                *t.faults.entry(step.fault.clone()).or_default() += 1;
            }
        }
        t.acknowledged_calls_checked += seed.acknowledged_calls_checked;
        t.anomalies += seed.anomalies().len();
    }
    t
}

/// The report, as markdown.
pub fn markdown(title: &str, seeds: &[SeedReport], header: &str) -> String {
    let t = totals(seeds);
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n\n{header}\n");
    let _ = writeln!(s, "## Totals\n");
    let _ = writeln!(s, "| | |\n| --- | --- |");
    let _ = writeln!(s, "| seeds | {} ({} failed) |", t.seeds, t.failed_seeds);
    let _ = writeln!(
        s,
        "| operations | {} ({} with unknown outcome) |",
        t.operations, t.unknown_outcomes
    );
    let faults: Vec<String> = t.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        s,
        "| faults | {} ({}) |",
        t.faults.values().sum::<usize>(),
        faults.join(", ")
    );
    let _ = writeln!(
        s,
        "| acknowledged calls checked | {} |",
        t.acknowledged_calls_checked
    );
    let _ = writeln!(s, "| anomalies | {} |\n", t.anomalies);
    for seed in seeds {
        seed_section(&mut s, seed);
    }
    s
}

fn seed_section(s: &mut String, seed: &SeedReport) {
    let verdict = if seed.passed() { "PASSED" } else { "FAILED" };
    let _ = writeln!(
        s,
        "## Seed {} — {verdict}\n\n{} nodes, {} steps, {:.0} s; data in `{}`; replay: `{}`\n",
        seed.plan.seed,
        seed.plan.nodes,
        seed.plan.steps,
        seed.took_s,
        seed.dir.display(),
        seed.plan.replay_command()
    );
    if let Some(e) = &seed.error {
        let _ = writeln!(s, "**The run itself failed:** {e}\n");
    }
    let _ = writeln!(
        s,
        "### Schedule\n\n| at (s) | fault | detail | took (s) | problems | notes |\n| --- | --- | --- | --- | --- | --- |"
    );
    for step in &seed.steps {
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} | {:.1} | {} | {} |",
            step.started_s,
            step.fault,
            step.detail.replace('|', "/"),
            step.took_s,
            step.problems.join("; ").replace('|', "/"),
            step.notes.join("; ").replace('|', "/")
        );
    }
    let _ = writeln!(
        s,
        "\n### Operations\n\n| operation | ok | fail | unknown |\n| --- | --- | --- | --- |"
    );
    for (name, kinds) in &seed.operations {
        let get = |k: &str| kinds.get(k).copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} |",
            get("ok"),
            get("fail"),
            get("unknown")
        );
    }
    let _ = writeln!(
        s,
        "\n### Checks\n\n| check | scope | result |\n| --- | --- | --- |"
    );
    for check in &seed.checks {
        let result = if check.passed() {
            "passed".to_string()
        } else {
            format!("**{} anomalies**", check.anomalies.len())
        };
        let _ = writeln!(s, "| {} | {} | {result} |", check.name, check.scope);
    }
    let anomalies = seed.anomalies();
    if !anomalies.is_empty() {
        let _ = writeln!(s, "\n### Anomalies\n");
        for a in anomalies.iter().take(50) {
            let _ = writeln!(s, "```\n{a}\n```");
        }
        if anomalies.len() > 50 {
            let _ = writeln!(s, "… and {} more (see report.json)", anomalies.len() - 50);
        }
    }
    let _ = writeln!(s);
}
