//! `callvault cluster …`: membership of the metadata store, through any member's Cluster service
//! (followers forward changes to the leader).

use std::time::Duration;

use callvault_proto::v1 as pb;
use callvault_proto::v1::cluster_client::ClusterClient;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Makes the node at --node the first voter of a new cluster. Run once, on one node.
    Init {
        /// host:port of the node's internal endpoint.
        #[arg(long)]
        node: String,
    },
    /// Adds a node as a learner, waits until it has caught up, then promotes it to voter.
    AddVoter {
        /// host:port of any current member.
        #[arg(long)]
        node: String,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// host:port of the new node's internal endpoint.
        #[arg(long)]
        addr: String,
    },
    /// Adds a node as a learner only (it replicates but does not vote).
    AddLearner {
        /// host:port of any current member.
        #[arg(long)]
        node: String,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// host:port of the new node's internal endpoint.
        #[arg(long)]
        addr: String,
    },
    /// Removes a node from the cluster. It holds metadata (wrapped keys of shredded calls in its
    /// log or snapshot): the removal waits for its shred receipts, or, with --destroy-volume,
    /// waives them and records that its volume must be destroyed.
    Remove {
        /// host:port of any current member.
        #[arg(long)]
        node: String,
        /// The id of the node to remove.
        #[arg(long)]
        id: u64,
        /// Waive its pending shred receipts: its volume will be destroyed (status lists it).
        #[arg(long)]
        destroy_volume: bool,
        /// How long to wait for its receipts, seconds (default 60, at most 600).
        #[arg(long, default_value_t = 60)]
        wait_seconds: u32,
        /// Why, for the audit log (with --destroy-volume).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Shows the cluster as the node at --node sees it.
    Status {
        /// host:port of a member.
        #[arg(long)]
        node: String,
    },
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    let status = match command {
        ClusterCommand::Init { node } => client(&node).await?.init(pb::InitRequest {}).await,
        ClusterCommand::AddVoter { node, id, addr } => {
            client(&node)
                .await?
                .add_member(pb::AddMemberRequest {
                    node_id: id,
                    addr,
                    learner_only: false,
                })
                .await
        }
        ClusterCommand::AddLearner { node, id, addr } => {
            client(&node)
                .await?
                .add_member(pb::AddMemberRequest {
                    node_id: id,
                    addr,
                    learner_only: true,
                })
                .await
        }
        ClusterCommand::Remove {
            node,
            id,
            destroy_volume,
            wait_seconds,
            reason,
        } => {
            client(&node)
                .await?
                .remove_member(pb::RemoveMemberRequest {
                    node_id: id,
                    destroy_volume,
                    wait_seconds,
                    reason,
                })
                .await
        }
        ClusterCommand::Status { node } => client(&node).await?.status(pb::StatusRequest {}).await,
    }
    .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
    .into_inner();
    print_status(&status);
    Ok(())
}

async fn client(addr: &str) -> anyhow::Result<ClusterClient<callvault_proto::auth::AuthChannel>> {
    // Adding a voter waits for it to catch up, so allow a minute.
    Ok(ClusterClient::new(
        super::connect_with_env_token(addr, Duration::from_secs(60)).await?,
    ))
}

fn print_status(status: &pb::ClusterStatus) {
    let leader = if status.leader_id == 0 {
        "none".to_string()
    } else {
        status.leader_id.to_string()
    };
    println!(
        "node {} ({}), leader {leader}, term {}, last log {}, applied {}",
        status.node_id, status.role, status.term, status.last_log_index, status.last_applied_index
    );
    println!(
        "{:>6}  {:<24} {:<8} {:>10}",
        "id", "addr", "kind", "matched"
    );
    for m in &status.members {
        println!(
            "{:>6}  {:<24} {:<8} {:>10}",
            m.node_id,
            m.addr,
            if m.voter { "voter" } else { "learner" },
            m.matched_index
        );
    }
    print_clock(status);
    if status.shreds_pending > 0 {
        println!("shreds waiting for a receipt: {}", status.shreds_pending);
    }
    for node in &status.volumes_to_destroy {
        println!("node {node}'s volume must be destroyed (its shred receipts were waived)");
    }
}

/// The cluster time, the sweep leader and every voter's clock against it.
fn print_clock(status: &pb::ClusterStatus) {
    match status.cluster_time_ms {
        Some(ms) => println!(
            "cluster time {} ms (median of the voters' clocks), sweep leader {}",
            ms, status.sweep_leader
        ),
        None => println!("no cluster time yet (fewer than a majority of voters attested)"),
    }
    for clock in &status.clocks {
        let offset = clock
            .offset_ms
            .map_or_else(|| "never attested".to_string(), |o| format!("{o:+} ms"));
        let flag = if clock.suspect {
            "  OFF BY MORE THAN THE BOUND: does not lead sweeps"
        } else {
            ""
        };
        println!("  voter {} clock {offset}{flag}", clock.node_id);
    }
}
