//! An ingest node stamps each commit with its own clock, and `apply` refuses a commit stamped
//! more than [`MAX_COMMIT_DELAY_MS`] before the cluster time (its chunks may already be swept as
//! orphans). A node whose clock is that far behind would stream every call and then have every
//! commit refused with "retry", forever: it refuses calls before any audio instead, and says
//! why. The cluster time comes with the standing read every call makes anyway.

use callvault_core::UnixMillis;
use callvault_meta::retention::MAX_COMMIT_DELAY_MS;
use tonic::Status;

/// How far behind the cluster time this node's clock may be: half the commit window, so a call
/// accepted now still has the other half for its stream's end and its commit.
pub const MAX_BEHIND_MS: i64 = MAX_COMMIT_DELAY_MS / 2;

/// How far `local` is behind `cluster_time`, when that is more than [`MAX_BEHIND_MS`]. The
/// cluster time trails real time by up to an attestation period, so an honest clock is ahead
/// of it, never refused.
pub fn too_far_behind(cluster_time: UnixMillis, local: UnixMillis) -> Option<i64> {
    let behind = cluster_time.0.saturating_sub(local.0);
    (behind > MAX_BEHIND_MS).then_some(behind)
}

/// Refuses (UNAVAILABLE: another ingest node can take the call) while `local` is too far behind
/// `cluster_time`; a cluster without a time yet lets the call on (`apply` still decides).
pub fn refuse_if_behind(cluster_time: Option<UnixMillis>, local: UnixMillis) -> Result<(), Status> {
    let Some(behind) = cluster_time.and_then(|t| too_far_behind(t, local)) else {
        return Ok(());
    };
    tracing::warn!(
        alert = "ingest_clock_behind",
        behind_ms = behind,
        bound_ms = MAX_BEHIND_MS,
        "this ingest node's clock is behind the cluster time: it refuses calls"
    );
    Err(Status::unavailable(format!(
        "this ingest node's clock is {:.1} s behind the cluster time (more than {} s): the \
         metadata store would refuse its commits; nothing was stored. Fix this node's time source \
         (NTP) or send the call to another ingest node",
        behind as f64 / 1000.0,
        MAX_BEHIND_MS / 1000
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_honest_clock_ahead_of_the_trailing_cluster_time_is_never_refused() {
        assert_eq!(too_far_behind(UnixMillis(1_000), UnixMillis(6_000)), None);
        assert_eq!(too_far_behind(UnixMillis(1_000), UnixMillis(1_000)), None);
        assert_eq!(
            too_far_behind(UnixMillis(MAX_BEHIND_MS), UnixMillis(0)),
            None,
            "the bound itself is allowed"
        );
        assert!(
            refuse_if_behind(None, UnixMillis(0)).is_ok(),
            "no cluster time yet"
        );
    }

    #[test]
    fn a_clock_behind_by_more_than_half_the_commit_window_is_refused() {
        assert_eq!(
            too_far_behind(UnixMillis(MAX_BEHIND_MS + 1), UnixMillis(0)),
            Some(MAX_BEHIND_MS + 1)
        );
        let refused = refuse_if_behind(Some(UnixMillis(120_000)), UnixMillis(0)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(refused.message().contains("120.0 s behind"), "{refused:?}");
    }
}
