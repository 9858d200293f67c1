//! Watches the cluster while the nemesis works: every node's role and term (two leaders in one
//! term is a split brain), and now and then a signed audit checkpoint, which the final log must
//! extend.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::Clients;

/// A node's own word on its role.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleSeen {
    pub t_ms: u64,
    pub node: usize,
    pub term: u64,
    pub role: String,
}

/// What the monitor saw.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Observed {
    pub roles: Vec<RoleSeen>,
    /// Signed checkpoint notes, with the node that served each.
    pub checkpoints: Vec<(usize, String)>,
}

/// Polls until `stop`; what it saw.
pub async fn watch(
    clients: Clients,
    started: std::time::Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Observed {
    let mut seen = Observed::default();
    let mut tick = 0u64;
    while !*stop.borrow() {
        for node in 1..=clients.size() {
            if let Some(status) = clients.status(node).await {
                seen.roles.push(RoleSeen {
                    t_ms: started.elapsed().as_millis() as u64,
                    node,
                    term: status.term,
                    role: status.role,
                });
            }
        }
        if tick.is_multiple_of(40) {
            let node = 1 + (tick / 40) as usize % clients.size();
            if let Some(checkpoint) = clients.checkpoint(node).await {
                seen.checkpoints.push((node, checkpoint.signed_note));
            }
        }
        tick += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    seen
}
