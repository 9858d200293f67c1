//! Checks of the healed cluster itself: equal state digests, one audit log, no plaintext audio
//! on any disk, and no term with two leaders.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Checked;
use crate::cluster::Clients;
use crate::history::{Completed, Kind, Op, Out};
use crate::monitor::Observed;
use crate::workload::CallSpec;

/// Every node's applied index and digest, once all are at the same index (retried for up to a
/// minute while the lifecycle workers still commit).
pub async fn digests(clients: &Clients, live: &[usize]) -> Checked {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let mut seen = Vec::new();
        for &node in live {
            seen.push((node, clients.digest(node).await));
        }
        let indexes: Vec<Option<u64>> = seen.iter().map(|(_, d)| d.as_ref().map(|d| d.0)).collect();
        if indexes.iter().all(|i| i.is_some() && *i == indexes[0]) {
            let first = &seen[0].1;
            let differing: Vec<String> = seen
                .iter()
                .filter(|(_, d)| d != first)
                .map(|(node, d)| {
                    let d = d.as_ref().expect("all answered");
                    format!("node {node} at {} has digest {}", d.0, hex::encode(&d.1))
                })
                .collect();
            let index = indexes[0].unwrap_or_default();
            let anomalies = if differing.is_empty() {
                Vec::new()
            } else {
                let reference = first.as_ref().expect("answered");
                vec![format!(
                    "state digests differ at applied index {index}: node {} has {}; {}",
                    seen[0].0,
                    hex::encode(&reference.1),
                    differing.join("; ")
                )]
            };
            return Checked::new(
                "equal state digests",
                format!("nodes {live:?} at applied index {index}"),
                anomalies,
            );
        }
        last = indexes;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Checked::new(
        "equal state digests",
        format!("nodes {live:?}"),
        vec![format!(
            "the nodes never reached one applied index within a minute (last seen {last:?})"
        )],
    )
}

/// Every change in the audit log was asked for: no more hold placements or releases per call,
/// policy changes per jurisdiction or recordings per call than requests that succeeded or may
/// have. A command that applied twice (a retried proposal) shows up here even when no read saw
/// its second effect.
pub async fn audit_accounting(
    clients: &Clients,
    node: usize,
    history: &[Completed],
    dump: &Path,
) -> Checked {
    let Some(entries) = clients.audit_entries(node).await else {
        return Checked::new(
            "every audited change was requested once",
            format!("node {node}'s log"),
            vec![format!("node {node} did not serve its audit entries")],
        );
    };
    let lines: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {:?} {:?} {:?}",
                e.sequence, e.event, e.jurisdiction, e.subject, e.outcome, e.principal
            )
        })
        .collect();
    let _ = std::fs::write(dump, lines.join("\n"));
    // What may have taken effect: requests that succeeded or whose outcome is unknown.
    let mut asked: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in history.iter().filter(|c| c.kind != Kind::Fail) {
        let key = match (&c.op, &c.out) {
            (Op::PlaceHold { call, .. }, _) => ("hold.placed", call.clone()),
            (Op::ReleaseHold { call, .. }, _) => ("hold.released", call.clone()),
            (Op::PutPolicy { jurisdiction, .. }, _) => ("policy.changed", jurisdiction.clone()),
            (Op::Ingest { call, .. }, out)
                if c.kind == Kind::Info || matches!(out, Some(Out::Recorded { .. })) =>
            {
                ("call.recorded", call.clone())
            }
            _ => continue,
        };
        *asked.entry((key.0.to_string(), key.1)).or_default() += 1;
    }
    // Each jurisdiction's first policy came from the set-up, and each call records once.
    for j in [crate::workload::TX, crate::workload::CA] {
        *asked
            .entry(("policy.changed".into(), j.into()))
            .or_default() += 1;
    }
    for ((event, _), n) in asked.iter_mut() {
        if event == "call.recorded" {
            *n = (*n).min(1);
        }
    }
    let mut done: BTreeMap<(String, String), usize> = BTreeMap::new();
    // Every command is audited, refusals too ("refused: …"); only effects count here.
    for e in entries.iter().filter(|e| !e.outcome.starts_with("refused")) {
        let key = match e.event.as_str() {
            "hold.placed" | "hold.released" | "call.recorded" => e.subject.clone(),
            "policy.changed" => e.jurisdiction.clone(),
            _ => continue,
        };
        *done.entry((e.event.clone(), key)).or_default() += 1;
    }
    let anomalies = done
        .iter()
        .filter_map(|(key, &n)| {
            let allowed = asked.get(key).copied().unwrap_or_default();
            (n > allowed).then(|| {
                format!(
                    "{} {}: {n} in the audit log, but only {allowed} requests that may have succeeded",
                    key.0, key.1
                )
            })
        })
        .collect();
    Checked::new(
        "every audited change was requested once",
        format!("{} audit entries", entries.len()),
        anomalies,
    )
}

/// One audit log: every node serves a checkpoint of the same size and root, `callvault audit
/// verify` passes against each, and each node's log extends every checkpoint the monitor saved
/// during the run (a fork would fail the consistency proof).
pub async fn audit_log(
    clients: &Clients,
    live: &[usize],
    bin: &Path,
    dir: &Path,
    observed: &Observed,
) -> Checked {
    let mut anomalies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut checkpoints = Vec::new();
    while Instant::now() < deadline {
        checkpoints.clear();
        for &node in live {
            checkpoints.push(clients.checkpoint(node).await);
        }
        let sizes: Vec<Option<u64>> = checkpoints
            .iter()
            .map(|c| c.as_ref().map(|c| c.tree_size))
            .collect();
        if sizes.iter().all(|s| s.is_some() && *s == sizes[0]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let roots: Vec<Option<(u64, String)>> = checkpoints
        .iter()
        .map(|c| c.as_ref().map(|c| (c.tree_size, hex::encode(&c.root_hash))))
        .collect();
    if roots.iter().any(|r| r.is_none() || *r != roots[0]) {
        anomalies.push(format!("the nodes' checkpoints differ: {roots:?}"));
    }
    // Saved checkpoints: a sample, oldest to newest, so the run stays short.
    let step = observed.checkpoints.len().div_ceil(4).max(1);
    let saved: Vec<(usize, PathBuf)> = observed
        .checkpoints
        .iter()
        .step_by(step)
        .enumerate()
        .filter_map(|(i, (from, note))| {
            let path = dir.join(format!("checkpoint-{i}.note"));
            std::fs::write(&path, note).ok()?;
            Some((*from, path))
        })
        .collect();
    let secrets = clients.secrets();
    for &node in live {
        let addr = format!("{}:7100", crate::net::Network::node_ip(node));
        let mut runs: Vec<(String, Option<&PathBuf>)> =
            vec![("the latest checkpoint".into(), None)];
        runs.extend(saved.iter().map(|(from, path)| {
            (
                format!("a checkpoint node {from} served during the run"),
                Some(path),
            )
        }));
        for (what, checkpoint) in runs {
            let mut command = std::process::Command::new(bin);
            command
                .args(["audit", "verify", "--node", &addr, "--vkey", &secrets.vkey])
                .args(["--origin", &secrets.origin])
                .env("CALLVAULT_TOKEN", secrets.token("auditor"));
            if let Some(path) = checkpoint {
                command.arg("--checkpoint").arg(path);
            }
            match command.output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => anomalies.push(format!(
                    "audit verify against node {node} with {what}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => anomalies.push(format!("cannot run callvault audit verify: {e}")),
            }
        }
    }
    Checked::new(
        "one audit log",
        format!(
            "nodes {live:?}, {} checkpoints saved during the run",
            saved.len()
        ),
        anomalies,
    )
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}

/// Invariant 1 on the disks: no 32-byte window of any call's plaintext audio is in any file of
/// any node's volume (audio is stored only encrypted, and a privileged call's not at all).
pub fn no_plaintext(volumes: &[PathBuf], calls: &[CallSpec]) -> Checked {
    // Each chunk's first 32 bytes, looked up by their first 8.
    let mut windows: HashMap<u64, Vec<(&str, [u8; 32])>> = HashMap::new();
    for call in calls {
        for chunk in call.audio() {
            let window: [u8; 32] = chunk[..32]
                .try_into()
                .expect("chunks are longer than 32 bytes");
            let head = u64::from_le_bytes(window[..8].try_into().expect("8 bytes"));
            windows.entry(head).or_default().push((&call.id, window));
        }
    }
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut scanned = 0u64;
    for volume in volumes {
        let mut paths = Vec::new();
        files(volume, &mut paths);
        for path in paths {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            scanned += bytes.len() as u64;
            for at in 0..bytes.len().saturating_sub(31) {
                let head = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
                if let Some(candidates) = windows.get(&head) {
                    for (call, window) in candidates {
                        if bytes[at..at + 32] == window[..] {
                            found
                                .entry(call.to_string())
                                .or_default()
                                .push(path.display().to_string());
                        }
                    }
                }
            }
        }
    }
    let anomalies = found
        .into_iter()
        .map(|(call, paths)| format!("plaintext audio of {call} found in {paths:?}"))
        .collect();
    Checked::new(
        "no plaintext audio on any disk",
        format!("{} calls, {} MiB scanned", calls.len(), scanned >> 20),
        anomalies,
    )
}

/// No term had two leaders, as the nodes themselves reported their roles.
pub fn one_leader_per_term(observed: &Observed) -> Checked {
    let mut leaders: BTreeMap<u64, BTreeMap<usize, u64>> = BTreeMap::new();
    for seen in observed.roles.iter().filter(|r| r.role == "leader") {
        leaders
            .entry(seen.term)
            .or_default()
            .entry(seen.node)
            .or_insert(seen.t_ms);
    }
    let anomalies = leaders
        .iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(term, nodes)| format!("term {term} had leaders {nodes:?} (node: first seen at ms)"))
        .collect();
    Checked::new(
        "one leader per term",
        format!(
            "{} terms with a leader, {} role reports",
            leaders.len(),
            observed.roles.len()
        ),
        anomalies,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_plaintext_wherever_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let call = CallSpec {
            jurisdiction: crate::workload::TX,
            id: "TX-test-1".into(),
            number: crate::workload::number(1),
            chunks: 2,
            started_at: 0,
        };
        std::fs::write(dir.path().join("clean"), vec![7u8; 100_000]).unwrap();
        let volumes = vec![dir.path().to_path_buf()];
        assert!(no_plaintext(&volumes, std::slice::from_ref(&call)).passed());
        let mut leaked = vec![1u8; 5000];
        leaked.extend_from_slice(&call.audio()[1][..40]);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/000123.sst"), leaked).unwrap();
        let checked = no_plaintext(&volumes, &[call]);
        assert_eq!(checked.anomalies.len(), 1, "{:?}", checked.anomalies);
        assert!(checked.anomalies[0].contains("000123.sst"));
    }

    #[test]
    fn two_leaders_in_one_term_are_reported() {
        let seen = |node, term, role: &str| crate::monitor::RoleSeen {
            t_ms: 0,
            node,
            term,
            role: role.into(),
        };
        let mut observed = Observed {
            roles: vec![
                seen(1, 3, "leader"),
                seen(2, 3, "follower"),
                seen(2, 4, "leader"),
            ],
            ..Observed::default()
        };
        assert!(one_leader_per_term(&observed).passed());
        observed.roles.push(seen(3, 4, "leader"));
        assert!(!one_leader_per_term(&observed).passed());
    }
}
