//! What a run puts in force before its clients start: Texas keeps recordings a year (the calls of
//! the linearizability checks never expire), California one day swept every two seconds (its
//! calls fall due during the run).

use std::time::{Duration, Instant};

use anyhow::bail;
use callvault_proto::v1 as pb;

use crate::cluster::Clients;
use crate::workload::{CA, CA_SWEEP_SECONDS, TX};

/// Texas's policy; `seq` only changes its `source`, so every put is a real new version.
pub fn tx_policy(seq: u32) -> pb::RetentionPolicy {
    pb::RetentionPolicy {
        version: 0,
        recording_retention_days: 365,
        call_detail_retention_days: 1095,
        privileged_retention: pb::PrivilegedRetention::CallDetail as i32,
        hold_requires_review_date: false,
        hold_max_review_days: 365,
        sweep_interval_seconds: 5,
        source: format!("chaos suite, put #{seq}"),
        shortening_notice_seconds: 0,
    }
}

fn ca_policy() -> pb::RetentionPolicy {
    pb::RetentionPolicy {
        version: 0,
        recording_retention_days: 1,
        call_detail_retention_days: 2,
        privileged_retention: pb::PrivilegedRetention::CallDetail as i32,
        hold_requires_review_date: false,
        hold_max_review_days: 365,
        sweep_interval_seconds: CA_SWEEP_SECONDS,
        source: "chaos suite: due during the run".into(),
        shortening_notice_seconds: 0,
    }
}

/// Puts version 1 of both policies in force through node 1, retrying through the elections of a
/// young cluster.
pub async fn put_policies(clients: &Clients) -> anyhow::Result<()> {
    for (jurisdiction, policy) in [(TX, tx_policy(0)), (CA, ca_policy())] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut admin = pb::admin_client::AdminClient::new(clients.as_principal(1, "operator"));
            let put = admin
                .put_policy(pb::PutPolicyRequest {
                    jurisdiction: jurisdiction.into(),
                    policy: Some(policy.clone()),
                    expected_version: 0,
                })
                .await;
            let version = match put {
                Ok(answer) => answer.into_inner().version,
                Err(_) => admin
                    .get_policy(pb::GetPolicyRequest {
                        jurisdiction: jurisdiction.into(),
                        version: 0,
                    })
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().policy)
                    .map_or(0, |p| p.version),
            };
            if version == 1 {
                break;
            }
            if Instant::now() > deadline {
                bail!("could not put {jurisdiction}'s policy in force");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}
