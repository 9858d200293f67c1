//! The network the cluster runs on: one network namespace per node, one for the harness's
//! clients, and one holding a bridge that joins them through veth pairs. Nothing of it exists in
//! the machine's own namespace, so the nodes' addresses (10.99.0.x) are reachable only from
//! inside these namespaces and no packet can leave the machine.
//!
//! Partitions are nftables drops in each node's namespace: a set of source addresses its input
//! chain drops. Everything is created under one unique name prefix and removed by [`Network`]'s
//! drop (also on a panic); [`remove_leftovers`] removes what a killed run left behind.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// Every namespace of the suite starts with this, followed by the run's tag.
pub const PREFIX: &str = "cvchaos-";
/// The subnet of every run (namespaces keep runs apart, so runs may share it).
const SUBNET: &str = "10.99.0";
/// The last octet of the clients' address.
const CLIENT_OCTET: u8 = 100;

/// Runs `program args` to completion; an error names the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs an nftables script inside namespace `ns`.
fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run nft (is nftables installed? scripts/chaos installs it)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces of one run. Dropping it kills every process left in them and deletes them.
pub struct Network {
    tag: String,
    nodes: usize,
}

impl Network {
    /// Creates the bridge, the clients' namespace and `nodes` node namespaces (ids 1..=nodes).
    pub fn create(tag: &str, nodes: usize) -> anyhow::Result<Self> {
        let net = Network {
            tag: tag.to_string(),
            nodes,
        };
        let switch = net.switch_ns();
        run("ip", &["netns", "add", &switch])?;
        run(
            "ip",
            &["-n", &switch, "link", "add", "br0", "type", "bridge"],
        )?;
        run("ip", &["-n", &switch, "link", "set", "br0", "up"])?;
        for id in 1..=nodes {
            net.attach(&net.node_ns(id), &format!("n{id}"), id as u8)?;
            nft(&net.node_ns(id), PARTITION_TABLE)?;
        }
        net.attach(&net.client_ns(), "cl", CLIENT_OCTET)?;
        Ok(net)
    }

    /// A namespace `ns` with `eth0` at `SUBNET.octet`, its veth peer `port` on the bridge.
    fn attach(&self, ns: &str, port: &str, octet: u8) -> anyhow::Result<()> {
        let switch = self.switch_ns();
        run("ip", &["netns", "add", ns])?;
        run(
            "ip",
            &[
                "link", "add", port, "netns", &switch, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ],
        )?;
        run(
            "ip",
            &["-n", &switch, "link", "set", port, "master", "br0", "up"],
        )?;
        let addr = format!("{SUBNET}.{octet}/24");
        run("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The run's tag (unique among live runs).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    fn switch_ns(&self) -> String {
        format!("{PREFIX}{}-sw", self.tag)
    }

    /// The namespace of node `id`.
    pub fn node_ns(&self, id: usize) -> String {
        format!("{PREFIX}{}-{id}", self.tag)
    }

    /// The namespace the harness's clients run in.
    pub fn client_ns(&self) -> String {
        format!("{PREFIX}{}-cl", self.tag)
    }

    /// The address of node `id` inside the namespaces.
    pub fn node_ip(id: usize) -> String {
        format!("{SUBNET}.{id}")
    }

    /// Moves the calling thread into the clients' namespace; threads it creates afterwards
    /// (a tokio runtime's workers, child processes) are there too.
    pub fn enter_client_ns(&self) -> anyhow::Result<()> {
        enter_ns(&self.client_ns())
    }

    /// Makes node `id` drop every packet from the nodes in `from` (and accept all others).
    pub fn block(&self, id: usize, from: &BTreeSet<usize>) -> anyhow::Result<()> {
        let mut script = "flush set inet chaos blocked\n".to_string();
        if !from.is_empty() {
            let addrs: Vec<String> = from.iter().map(|&f| Self::node_ip(f)).collect();
            script.push_str(&format!(
                "add element inet chaos blocked {{ {} }}\n",
                addrs.join(", ")
            ));
        }
        nft(&self.node_ns(id), &script)
    }

    /// Lifts every drop.
    pub fn heal(&self) -> anyhow::Result<()> {
        for id in 1..=self.nodes {
            self.block(id, &BTreeSet::new())?;
        }
        Ok(())
    }
}

/// The per-node table: an input chain dropping the sources in `blocked`.
const PARTITION_TABLE: &str = "table inet chaos {
  set blocked { type ipv4_addr; }
  chain input { type filter hook input priority 0; policy accept; ip saddr @blocked drop; }
}
";

impl Drop for Network {
    fn drop(&mut self) {
        let mut names: Vec<String> = (1..=self.nodes).map(|id| self.node_ns(id)).collect();
        names.push(self.client_ns());
        names.push(self.switch_ns());
        for ns in names {
            remove_ns(&ns);
        }
    }
}

/// Opens namespace `ns` for `setns` (a file under /run/netns).
pub fn open_ns(ns: &str) -> anyhow::Result<OwnedFd> {
    let file = std::fs::File::open(Path::new("/run/netns").join(ns))
        .with_context(|| format!("no network namespace {ns}"))?;
    Ok(OwnedFd::from(file))
}

fn enter_ns(ns: &str) -> anyhow::Result<()> {
    let fd = open_ns(ns)?;
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns into {ns}: {} (the suite needs root)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Kills every process in `ns` and deletes it (its veth ends go with it).
fn remove_ns(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: signalling a process of the suite's own namespace.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
}

/// The tag of a namespace of the suite: what follows [`PREFIX`] up to the next `-`.
fn tag_of(ns: &str) -> Option<&str> {
    ns.strip_prefix(PREFIX)?.split('-').next()
}

/// The process id a tag names (tags are `<pid hex>x<counter>`).
fn pid_of(tag: &str) -> Option<i32> {
    i32::from_str_radix(tag.split('x').next()?, 16).ok()
}

/// A fresh tag for a run of this process.
pub fn new_tag() -> String {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{:x}x{n}", std::process::id())
}

/// Removes the namespaces (and their processes) and mounts of runs whose harness process is
/// gone: a run killed with SIGKILL leaves them behind. Returns what it removed.
pub fn remove_leftovers(mount_root: &Path) -> Vec<String> {
    let alive =
        |tag: &str| pid_of(tag).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    let mut removed = Vec::new();
    let listing = run("ip", &["netns", "list"]).unwrap_or_default();
    for ns in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(tag) = tag_of(ns)
            && !alive(tag)
        {
            remove_ns(ns);
            removed.push(ns.to_string());
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let root = mount_root.to_string_lossy();
    for target in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let Some(rest) = target.strip_prefix(root.as_ref()) else {
            continue;
        };
        let tag = rest.trim_start_matches('/').split('/').next().unwrap_or("");
        if !tag.is_empty() && !alive(tag) {
            let _ = run("umount", &["-l", target]);
            removed.push(target.to_string());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_their_process() {
        let tag = new_tag();
        assert_eq!(pid_of(&tag), Some(std::process::id() as i32));
        let ns = format!("{PREFIX}{tag}-3");
        assert_eq!(tag_of(&ns), Some(tag.as_str()));
        assert_eq!(tag_of("other-ns"), None);
    }
}
