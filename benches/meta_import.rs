//! Metadata-store import throughput: committed calls/s into a 3-node cluster of real
//! `callvault serve` processes on loopback, beside etcd's own write benchmark
//! (`etcdctl check perf --load=l`) on a 3-member etcd cluster on loopback, in the same run.
//! Then a large import (1,000,000 calls by default) prints calls/s at the start and at the end,
//! and the state machine's on-disk bytes per call after a full compaction.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p callvault-benches --bench meta_import
//! ```
//! Environment: `CALLVAULT_BENCH_CALLS` (comparison import, default 100000),
//! `CALLVAULT_BENCH_LARGE` (large import, default 1000000; 0 skips it),
//! `CALLVAULT_BENCH_CLIENTS` (concurrent clients, default 64), `CALLVAULT_BIN`.
//! etcd comes from Debian's `etcd-server` and `etcd-client`; the bench installs them when run as
//! root and says why it skips the comparison otherwise.

mod etcd;
mod fixtures;
mod import;

use callvault_core::Jurisdiction;
use callvault_core::codec::VersionedRecord;
use callvault_proto::v1 as pb;
use callvault_tests::MetaCluster;
use import::rate;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let calls = env_usize("CALLVAULT_BENCH_CALLS", 100_000);
    let large = env_usize("CALLVAULT_BENCH_LARGE", 1_000_000);
    let clients = env_usize("CALLVAULT_BENCH_CLIENTS", 64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut cluster = MetaCluster::start(3, "").await;
        for j in &Jurisdiction::ALL[..8] {
            let mut meta = cluster.nodes[0].meta();
            meta.propose(pb::ProposeRequest { command: import::policy(*j).encode() })
                .await
                .expect("policy");
        }
        let leader = cluster.nodes[(cluster.leader().await - 1) as usize].meta();
        let marks = import::import(&leader, 0..calls, clients, calls / 100).await;
        let total = rate(&marks, 0, marks.len() - 1);
        println!("callvault: {calls} calls from {clients} clients into 3 nodes: {total:.0} committed calls/s");

        match etcd::writes_per_second() {
            Ok(etcd) => println!(
                "etcd (3 members, etcdctl check perf --load=l): {etcd:.0} writes/s; callvault/etcd = {:.1}x",
                total / etcd
            ),
            Err(why) => println!("etcd comparison skipped: {why}"),
        }

        if large > 0 {
            let marks = import::import(&leader, calls..calls + large, clients, large / 100).await;
            let n = marks.len() - 1;
            println!(
                "large import of {large} calls: {:.0} calls/s over the first 10%, {:.0} calls/s over the last 10%, {:.0} overall",
                rate(&marks, 0, n / 10),
                rate(&marks, n - n / 10, n),
                rate(&marks, 0, n)
            );
        }
        let imported = calls + large;
        let leader = cluster.leader().await;
        let dir = cluster.node(leader).data_dir();
        for node in &mut cluster.nodes {
            node.stop();
        }
        // Full compaction of the leader's state machine, then its size on disk.
        let families = import::state_machine_footprint(&dir.join("meta"));
        let bytes: u64 = families.iter().map(|(_, b)| b).sum();
        for (name, family) in &families {
            println!("  {name}: {:.0} bytes/call", *family as f64 / imported as f64);
        }
        println!(
            "state machine after full compaction: {bytes} bytes for {imported} calls = {:.0} bytes/call ({} chunk ids = {} of them)",
            bytes as f64 / imported as f64,
            fixtures::CALL_BLOCKS,
            fixtures::CALL_BLOCKS * 32
        );
    });
}
