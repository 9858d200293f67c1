//! A metadata-store member as the Raft membership names it, and the incarnation that ties a
//! member id to one volume.
//!
//! A node that lost its volume comes back with an empty log and no memory of its votes. Under its
//! old identity it could grant a second vote in a term it already voted in, or make a quorum with
//! a peer that lacks entries it had acknowledged: acknowledged writes lost with fewer failures
//! than a quorum. So every volume gets a random incarnation when it is created, the membership
//! records the incarnation of each member, every Raft RPC names the incarnation its sender
//! expects, and a node refuses RPCs meant for another incarnation. A wiped node therefore takes
//! part in nothing until the leader has replaced its old incarnation in the membership, caught
//! it up as a learner and promoted it again (`Cluster.AddMember`).

use std::fmt;

/// The gRPC metadata key of the incarnation a Raft RPC's sender expects its target to be.
pub const INCARNATION_HEADER: &str = "callvault-incarnation";

/// A member: where peers reach it and which incarnation of its volume the cluster knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaMember {
    /// `host:port` of its internal gRPC endpoint.
    pub addr: String,
    /// Its volume's incarnation; 0 for members recorded before incarnations existed, which are
    /// not checked.
    pub incarnation: u64,
}

impl MetaMember {
    /// A member at `addr` whose volume is `incarnation`.
    pub fn new(addr: impl Into<String>, incarnation: u64) -> Self {
        MetaMember {
            addr: addr.into(),
            incarnation,
        }
    }
}

impl fmt::Display for MetaMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (incarnation {:016x})", self.addr, self.incarnation)
    }
}

/// Whether a request meant for `expected` may be served by the volume `own`: yes unless both
/// are known and differ.
pub fn incarnation_matches(expected: Option<u64>, own: u64) -> bool {
    match expected {
        None | Some(0) => true,
        Some(expected) => expected == own,
    }
}

/// The incarnation of the volume at `data_dir`, made (random, never 0) when the file is missing:
/// on a new volume, and once on a volume made before incarnations existed.
#[cfg(feature = "store")]
pub fn load_or_create_incarnation(
    data_dir: &std::path::Path,
) -> Result<u64, crate::storage::OpenError> {
    use crate::storage::{OpenError, write_atomically};
    let path = data_dir.join("incarnation");
    let io = |source| OpenError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| {
                io(std::io::Error::other(format!(
                    "not an incarnation: {text:?}"
                )))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let incarnation = loop {
                let n: u64 = rand::random();
                if n != 0 {
                    break n;
                }
            };
            write_atomically(&path, format!("{incarnation:016x}").as_bytes())?;
            Ok(incarnation)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "store")]
    #[test]
    fn a_volume_keeps_its_incarnation_and_a_new_volume_gets_another() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_incarnation(dir.path()).unwrap();
        assert_eq!(load_or_create_incarnation(dir.path()).unwrap(), first);
        let wiped = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_incarnation(wiped.path()).unwrap(), first);
        std::fs::write(dir.path().join("incarnation"), "zz").unwrap();
        assert!(load_or_create_incarnation(dir.path()).is_err());
    }

    #[test]
    fn only_a_known_different_incarnation_is_refused() {
        assert!(incarnation_matches(None, 7));
        assert!(incarnation_matches(Some(0), 7));
        assert!(incarnation_matches(Some(7), 7));
        assert!(!incarnation_matches(Some(8), 7));
    }
}
