//! The audit log inside the state machine: entries and Merkle tree nodes live in column families
//! written by the same atomic `apply` batch as the event they record, so the log and the state can
//! never disagree, and snapshots and replication carry them.

use callvault_audit::{
    AuditEntry, AuditEntryBuilder, AuditEvent, Hash, MerkleTree, NodeStore, leaf_hash,
};
use callvault_core::codec::VersionedRecord;
use callvault_core::{Jurisdiction, UnixMillis};

use crate::member::MetaMember;
use crate::txn::Txn;
use crate::types::NodeId;
use openraft::Membership;

/// Audit entries: `sequence` (u64 BE) → the entry's canonical bytes (the Merkle leaf).
pub const CF_AUDIT_ENTRIES: &str = "audit_entries";
/// Merkle nodes of complete subtrees above the leaves: `level | index` (u8, u64 BE) → 32-byte
/// hash; and the key `size` → the tree size (u64 BE). A leaf is the hash of its entry, which
/// `audit_entries` keeps, so leaves are not stored twice (stores written before that keep theirs,
/// and they are read as they are).
pub const CF_AUDIT_TREE: &str = "audit_tree";
const KEY_SIZE: &[u8] = b"size";
/// Entries by subject, for a call's history: `len | subject | sequence` → ∅.
pub const CF_AUDIT_SUBJECTS: &str = "audit_subjects";

/// The prefix of every index key of `subject`.
pub fn subject_prefix(subject: &str) -> Vec<u8> {
    let bytes = subject.as_bytes();
    let len = bytes.len().min(255);
    let mut key = Vec::with_capacity(1 + len + 8);
    key.push(len as u8);
    key.extend_from_slice(&bytes[..len]);
    key
}

/// Why an audit append failed: the store is damaged, or an entry broke a bound.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The tree's stored nodes are inconsistent.
    #[error("audit tree: {0}")]
    Tree(#[from] callvault_audit::TreeError),
    /// An entry field is out of bounds (a bug in the caller: entries are built from checked data).
    #[error("audit entry: {0}")]
    Entry(#[from] callvault_audit::EntryError),
    /// A stored value has the wrong length.
    #[error("audit tree: stored {what} is {len} bytes")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// The Merkle tree's nodes inside the current write set.
pub struct TreeNodes<'t, 'a>(pub &'t mut Txn<'a>);

fn node_key(level: u8, index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(level);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

impl NodeStore for TreeNodes<'_, '_> {
    type Error = AuditError;

    fn tree_size(&self) -> Result<u64, AuditError> {
        tree_size(self.0)
    }

    fn set_tree_size(&mut self, size: u64) -> Result<(), AuditError> {
        self.0.put(
            CF_AUDIT_TREE,
            KEY_SIZE.to_vec(),
            size.to_be_bytes().to_vec(),
        );
        Ok(())
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, AuditError> {
        match self.0.get(CF_AUDIT_TREE, &node_key(level, index))? {
            None if level == 0 => Ok(self
                .0
                .get(CF_AUDIT_ENTRIES, &index.to_be_bytes())?
                .map(|entry| leaf_hash(&entry))),
            None => Ok(None),
            Some(bytes) => {
                let hash: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| AuditError::Corrupt {
                            what: "node hash",
                            len: bytes.len(),
                        })?;
                Ok(Some(Hash(hash)))
            }
        }
    }

    fn put_node(&mut self, level: u8, index: u64, hash: Hash) -> Result<(), AuditError> {
        if level == 0 {
            // The leaf is the hash of the entry `append` stores under its sequence.
            return Ok(());
        }
        self.0
            .put(CF_AUDIT_TREE, node_key(level, index), hash.0.to_vec());
        Ok(())
    }
}

/// The number of entries in the log, as the write set would leave it.
pub fn tree_size(txn: &Txn<'_>) -> Result<u64, AuditError> {
    match txn.get(CF_AUDIT_TREE, KEY_SIZE)? {
        None => Ok(0),
        Some(bytes) => Ok(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
            |_| AuditError::Corrupt {
                what: "tree size",
                len: bytes.len(),
            },
        )?)),
    }
}

/// One event to record. Built by `apply` from the command it applies.
pub struct Event {
    /// What happened.
    pub event: AuditEvent,
    /// When (the command's time).
    pub time: UnixMillis,
    /// Who acted.
    pub principal: String,
    /// Whose data it concerns.
    pub jurisdiction: Option<Jurisdiction>,
    /// What it happened to (a call id, a policy, a fingerprint prefix); never a number in clear.
    pub subject: String,
    /// The result.
    pub outcome: String,
    /// Extra fields.
    pub details: Vec<(&'static str, String)>,
}

/// Appends `event` as the next entry: its bytes under its sequence and its leaf in the tree.
///
/// Every text field goes through [`bounded_text`] first: principals, reasons and evidence come
/// from callers, and a newline or an over-long field would otherwise fail the entry, the apply,
/// and with it the state machine on every replica.
pub fn append(txn: &mut Txn<'_>, event: Event) -> Result<AuditEntry, AuditError> {
    use callvault_audit::entry::{MAX_DETAIL_VALUE, MAX_OUTCOME, MAX_PRINCIPAL, MAX_SUBJECT};
    let sequence = tree_size(txn)?;
    let principal = bounded_text(&event.principal, MAX_PRINCIPAL);
    let principal = if principal.is_empty() {
        "unknown".to_string()
    } else {
        principal
    };
    let mut builder: AuditEntryBuilder =
        AuditEntry::builder(sequence, event.time, event.event, principal)
            .subject(bounded_text(&event.subject, MAX_SUBJECT))
            .outcome(bounded_text(&event.outcome, MAX_OUTCOME));
    if let Some(j) = event.jurisdiction {
        builder = builder.jurisdiction(j);
    }
    for (key, value) in event.details {
        builder = builder.detail(key, bounded_text(&value, MAX_DETAIL_VALUE));
    }
    let entry = builder.build()?;
    // The entry first: the tree reads leaves back from the entries.
    txn.put(
        CF_AUDIT_ENTRIES,
        sequence.to_be_bytes().to_vec(),
        entry.encode(),
    );
    MerkleTree::new(TreeNodes(txn)).append_entry(&entry)?;
    if !entry.subject().is_empty() {
        let mut key = subject_prefix(entry.subject());
        key.extend_from_slice(&sequence.to_be_bytes());
        txn.put(CF_AUDIT_SUBJECTS, key, Vec::new());
    }
    Ok(entry)
}

/// `text` made fit for an entry field: control characters become `?` and it is cut to `max` bytes
/// at a character boundary. For text that comes from outside `apply`'s checks (node addresses,
/// peer-supplied strings): a field over its limit would fail the apply, and with it the state
/// machine.
pub fn bounded_text(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The time of the newest entry in the log as the write set would leave it (0 for an empty log).
/// Events with no time of their own, such as membership changes that openraft writes, take it:
/// every replica reads the same entry, so they all log the same time.
pub fn latest_entry_time(txn: &Txn<'_>) -> Result<UnixMillis, AuditError> {
    let size = tree_size(txn)?;
    let Some(last) = size.checked_sub(1) else {
        return Ok(UnixMillis(0));
    };
    let bytes = txn
        .get(CF_AUDIT_ENTRIES, &last.to_be_bytes())?
        .ok_or(AuditError::Corrupt {
            what: "last entry",
            len: 0,
        })?;
    let entry = AuditEntry::decode(&bytes).map_err(|_| AuditError::Corrupt {
        what: "last entry",
        len: bytes.len(),
    })?;
    Ok(entry.time())
}

fn node_ids<'a>(ids: impl Iterator<Item = &'a NodeId>) -> String {
    let ids: Vec<String> = ids.map(ToString::to_string).collect();
    if ids.is_empty() {
        "none".to_string()
    } else {
        ids.join(",")
    }
}

/// Records the membership that the Raft entry at `log_index` put in force. Principal `raft`: the
/// change was proposed through the operator-only `Cluster` service, whose caller the membership
/// entry does not carry. Time: that of the newest entry before it (see [`latest_entry_time`]),
/// because openraft's membership entries carry none and `apply` reads no clock.
pub fn append_membership(
    txn: &mut Txn<'_>,
    log_index: u64,
    membership: &Membership<NodeId, MetaMember>,
) -> Result<AuditEntry, AuditError> {
    let time = latest_entry_time(txn)?;
    let configs: Vec<String> = membership
        .get_joint_config()
        .iter()
        .map(|voters| node_ids(voters.iter()))
        .collect();
    let joint = configs.len() > 1;
    let addresses: Vec<String> = membership
        .nodes()
        // The incarnation says which volume: a member replaced after losing its volume shows.
        .map(|(id, node)| format!("{id}={}#{:016x}", node.addr, node.incarnation))
        .collect();
    let max = callvault_audit::entry::MAX_DETAIL_VALUE;
    append(
        txn,
        Event {
            event: AuditEvent::MembershipChanged,
            time,
            principal: "raft".to_string(),
            jurisdiction: None,
            subject: "raft-membership".to_string(),
            outcome: if joint {
                "joint configuration: voters change".to_string()
            } else {
                "configuration in force".to_string()
            },
            details: vec![
                ("voters", bounded_text(&configs.join(" -> "), max)),
                (
                    "learners",
                    bounded_text(
                        &node_ids(membership.learner_ids().collect::<Vec<_>>().iter()),
                        max,
                    ),
                ),
                ("nodes", bounded_text(&addresses.join(","), max)),
                ("raft_log_index", log_index.to_string()),
            ],
        },
    )
}

/// A short, non-reversible name for a number's fingerprint, for entry subjects.
pub fn fingerprint_subject(fingerprint: &[u8; 32]) -> String {
    let hex: String = fingerprint[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("number:{hex}")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use callvault_audit::{AuditEntry, AuditEvent, MerkleTree, leaf_hash};
    use callvault_core::UnixMillis;
    use callvault_core::codec::VersionedRecord;
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload, Membership};
    use rocksdb::IteratorMode;

    use super::*;
    use crate::auth_failures::{AuthFailureReport, SourceFailures};
    use crate::command::Command;
    use crate::state_machine::StateMachineStore;
    use crate::types::{Entry, LogId};

    fn entry(index: u64, payload: EntryPayload<crate::TypeConfig>) -> Entry {
        Entry {
            log_id: LogId {
                leader_id: CommittedLeaderId::new(1, 1),
                index,
            },
            payload,
        }
    }

    fn membership(voters: &[&[u64]], learners: &[u64]) -> Membership<NodeId, MetaMember> {
        let configs: Vec<BTreeSet<u64>> =
            voters.iter().map(|c| c.iter().copied().collect()).collect();
        let mut nodes = BTreeMap::new();
        for id in configs.iter().flatten().chain(learners) {
            nodes.insert(
                *id,
                MetaMember::new(format!("127.0.0.1:{}", 7100 + id), *id),
            );
        }
        Membership::new(configs, nodes)
    }

    fn entries(sm: &StateMachineStore) -> Vec<AuditEntry> {
        let db = sm.db();
        db.iterator_cf(db.cf_handle(CF_AUDIT_ENTRIES).unwrap(), IteratorMode::Start)
            .map(|kv| AuditEntry::decode(&kv.unwrap().1).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn membership_changes_and_auth_failures_are_logged_in_apply_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let report = AuthFailureReport {
            node_id: 2,
            window_start: UnixMillis(1_000),
            window_end: UnixMillis(61_000),
            sources: vec![SourceFailures {
                peer: Some("127.0.0.1".parse().unwrap()),
                missing: 0,
                malformed: 0,
                unknown: 12,
                first_at: UnixMillis(2_000),
                last_at: UnixMillis(60_000),
                token_hash_prefix: Some([0xab, 0xcd, 0x01, 0x23]),
                distinct_tokens: 3,
            }],
            other_failures: 0,
            reports_lost: 0,
        };
        sm.apply(vec![
            // The first entry of a new cluster: no earlier entry, so time 0.
            entry(0, EntryPayload::Membership(membership(&[&[1]], &[]))),
            entry(1, EntryPayload::Blank),
            entry(2, EntryPayload::Normal(Command::RecordAuthFailures(report))),
            // Adding node 2: a learner, then the joint and the final configuration.
            entry(3, EntryPayload::Membership(membership(&[&[1]], &[2]))),
            entry(
                4,
                EntryPayload::Membership(membership(&[&[1], &[1, 2]], &[])),
            ),
            entry(5, EntryPayload::Membership(membership(&[&[1, 2]], &[]))),
        ])
        .await
        .unwrap();

        let logged = entries(&sm);
        let summary: Vec<(u64, AuditEvent, &str, i64)> = logged
            .iter()
            .map(|e| (e.sequence(), e.event(), e.subject(), e.time().0))
            .collect();
        assert_eq!(
            summary,
            [
                (0, AuditEvent::MembershipChanged, "raft-membership", 0),
                (
                    1,
                    AuditEvent::AuthenticationFailure,
                    "peer:127.0.0.1",
                    61_000
                ),
                // Membership entries take the time of the entry before them.
                (2, AuditEvent::MembershipChanged, "raft-membership", 61_000),
                (3, AuditEvent::MembershipChanged, "raft-membership", 61_000),
                (4, AuditEvent::MembershipChanged, "raft-membership", 61_000),
            ]
        );
        let detail = |e: &AuditEntry, k: &str| e.details().get(k).cloned().unwrap_or_default();
        assert_eq!(logged[0].principal(), "raft");
        assert_eq!(logged[0].jurisdiction(), None);
        assert_eq!(detail(&logged[0], "voters"), "1");
        assert_eq!(detail(&logged[0], "learners"), "none");
        assert_eq!(detail(&logged[0], "raft_log_index"), "0");
        assert_eq!(detail(&logged[2], "learners"), "2");
        assert_eq!(
            detail(&logged[2], "nodes"),
            "1=127.0.0.1:7101#0000000000000001,2=127.0.0.1:7102#0000000000000002"
        );
        assert_eq!(detail(&logged[3], "voters"), "1 -> 1,2");
        assert!(logged[3].outcome().starts_with("joint"));
        assert_eq!(detail(&logged[4], "voters"), "1,2");
        assert_eq!(detail(&logged[4], "raft_log_index"), "5");

        let failure = &logged[1];
        assert_eq!(failure.principal(), crate::auth_failures::UNAUTHENTICATED);
        assert_eq!(failure.outcome(), "12 failed authentications");
        assert_eq!(detail(failure, "unknown_token"), "12");
        assert_eq!(detail(failure, "token_blake3_prefix"), "abcd0123");
        assert_eq!(detail(failure, "node"), "2");

        // The tree covers exactly these entries.
        let db = sm.db();
        let mut txn = Txn::new(&db);
        let tree = MerkleTree::new(TreeNodes(&mut txn));
        assert_eq!(tree.size().unwrap(), 5);
        let root = tree.root().unwrap();
        for e in &logged {
            tree.inclusion_proof(e.sequence(), 5)
                .unwrap()
                .verify(&leaf_hash(&e.encode()), &root)
                .unwrap();
        }
    }

    fn event(n: u64) -> Event {
        Event {
            event: AuditEvent::PolicyChanged,
            time: UnixMillis(1_700_000_000_000 + n as i64),
            principal: "operator".into(),
            jurisdiction: None,
            subject: format!("subject-{n}"),
            outcome: "ok".into(),
            details: Vec::new(),
        }
    }

    /// Leaves are the entries' hashes, read back from the entries: only the nodes above them
    /// take room, and proofs verify as before.
    #[test]
    fn leaves_are_not_stored_twice_and_proofs_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open(dir.path()).unwrap();
        let db = sm.db();
        let mut txn = Txn::new(&db);
        let logged: Vec<AuditEntry> = (0..13)
            .map(|n| append(&mut txn, event(n)).unwrap())
            .collect();
        db.write(txn.into_batch()).unwrap();

        let stored_levels: Vec<u8> = db
            .iterator_cf(db.cf_handle(CF_AUDIT_TREE).unwrap(), IteratorMode::Start)
            .map(|kv| kv.unwrap().0)
            .filter(|key| key.as_ref() != KEY_SIZE)
            .map(|key| key[0])
            .collect();
        assert!(!stored_levels.contains(&0), "{stored_levels:?}");
        // 13 leaves close 6 + 3 + 1 subtrees above them.
        assert_eq!(stored_levels.len(), 10);

        let mut txn = Txn::new(&db);
        let tree = MerkleTree::new(TreeNodes(&mut txn));
        let root = tree.root().unwrap();
        for e in &logged {
            tree.inclusion_proof(e.sequence(), 13)
                .unwrap()
                .verify(&leaf_hash(&e.encode()), &root)
                .unwrap();
        }
        // A tampered entry no longer proves against the root it was logged under.
        let mut bytes = logged[4].encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            tree.inclusion_proof(4, 13)
                .unwrap()
                .verify(&leaf_hash(&bytes), &root)
                .is_err()
        );
    }

    /// Stores written when leaves were kept in the tree family read them from there.
    #[test]
    fn a_stored_leaf_is_read_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open(dir.path()).unwrap();
        let db = sm.db();
        let mut txn = Txn::new(&db);
        append(&mut txn, event(0)).unwrap();
        let stored = Hash([7; 32]);
        txn.put(CF_AUDIT_TREE, node_key(0, 0), stored.0.to_vec());
        assert_eq!(TreeNodes(&mut txn).node(0, 0).unwrap(), Some(stored));
    }

    #[test]
    fn text_from_outside_is_made_fit_for_an_entry() {
        assert_eq!(bounded_text("a\nb\tc", 100), "a?b?c");
        assert_eq!(bounded_text("ééé", 5), "éé");
        assert_eq!(bounded_text("", 5), "");
        let long = "x".repeat(5000);
        assert_eq!(bounded_text(&long, 1024).len(), 1024);
    }

    #[test]
    fn caller_text_with_newlines_or_over_its_limit_does_not_fail_the_apply() {
        use callvault_core::{Jurisdiction, PrivilegeKind, RegistryEntry, normalize};
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open(dir.path()).unwrap();
        let db = sm.db();
        let mut txn = Txn::new(&db);
        // The admin API passes evidence through as given; a newline in it once failed the apply.
        let register = Command::RegisterPrivileged {
            entry: RegistryEntry {
                jurisdiction: Jurisdiction::Tx,
                number: normalize("(512) 555-0100").unwrap(),
                kind: PrivilegeKind::Attorney,
                registrant: "tx\tregistry".into(),
                evidence: "bar card 1\nsecond line".into(),
                registered_at: UnixMillis(5),
            },
            fingerprint: [1; 32],
        };
        crate::apply::apply_command(
            &mut txn,
            &register,
            crate::apply::LogPosition { term: 1, index: 1 },
        )
        .unwrap();
        let logged = append(
            &mut txn,
            Event {
                event: AuditEvent::CallFlagged,
                time: UnixMillis(6),
                principal: "p".repeat(300),
                jurisdiction: None,
                subject: "s".repeat(300),
                outcome: "o\n".repeat(300),
                details: vec![("reason", "r".repeat(2000))],
            },
        )
        .unwrap();
        db.write(txn.into_batch()).unwrap();
        let stored = entries(&sm);
        assert_eq!(stored[0].details()["evidence"], "bar card 1?second line");
        assert_eq!(stored[0].principal(), "tx?registry");
        assert_eq!(logged.principal().len(), 256);
        assert_eq!(logged.subject().len(), 256);
        assert_eq!(logged.outcome().len(), 512);
        assert_eq!(logged.details()["reason"].len(), 1024);
    }

    #[test]
    fn node_addresses_with_control_characters_do_not_fail_the_apply() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open(dir.path()).unwrap();
        let db = sm.db();
        let mut txn = Txn::new(&db);
        let mut nodes = BTreeMap::new();
        nodes.insert(
            1u64,
            MetaMember::new(format!("evil\n{}", "a".repeat(4000)), 1),
        );
        let m = Membership::new(vec![[1u64].into_iter().collect()], nodes);
        let logged = append_membership(&mut txn, 9, &m).unwrap();
        let nodes = &logged.details()["nodes"];
        assert!(
            nodes.starts_with("1=evil?a") && nodes.len() == 1024,
            "{nodes}"
        );
    }
}
