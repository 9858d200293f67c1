//! Writes the seed corpus of every fuzz target: real messages, records, notes and files of the
//! kinds the tests use, so the fuzzers start from inputs that get past the first checks.
//!
//! `cargo run -p callvault-fuzz --example seed_corpus` (from the repository root) rewrites
//! `fuzz/corpus/<target>/seed-*` (old seeds go); files the fuzzers or people added stay.

use std::path::Path;

use callvault_audit::{AuditEntry, AuditEvent, Checkpoint, leaf_hash};
use callvault_core::call::{CallId, CallRecord, Direction, Lifecycle};
use callvault_core::codec::VersionedRecord;
use callvault_core::policy::{PrivilegedRetention, RetentionPolicy, VersionedPolicy};
use callvault_core::tombstone::{CallTombstone, TombstoneOutcome};
use callvault_core::{Jurisdiction, PrivilegeKind, RegistryEntry, UnixMillis, normalize};
use callvault_fuzz::audit::{ORIGIN, signer};
use callvault_fuzz::records::RECORDS;
use callvault_meta::CommandResult;
use callvault_meta::MetaMember;
use callvault_meta::auth_failures::{AuthFailureReport, SourceFailures};
use callvault_meta::command::SessionRequest;
use callvault_meta::command::{AccessQuota, AccessRequest, Command};
use callvault_meta::convert;
use callvault_meta::records::{
    Counters, LogPosition, QuotaUse, SensitiveEntry, SessionRecord, ShredKind, ShredRecord,
};
use callvault_proto::v1 as pb;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, Vote};
use prost::Message;

fn policy() -> RetentionPolicy {
    RetentionPolicy {
        recording_retention_days: 90,
        call_detail_retention_days: 365,
        privileged_retention: PrivilegedRetention::CallDetail,
        hold_requires_review_date: true,
        hold_max_review_days: 365,
        sweep_interval_seconds: 30,
        shortening_notice_seconds: 86_400,
        source: "Tex. Gov't Code (example)".into(),
    }
}

fn call() -> CallRecord {
    CallRecord {
        call_id: CallId::new("tx-huntsville-000123").unwrap(),
        jurisdiction: Jurisdiction::Tx,
        facility_id: "fac-1".into(),
        inmate_id: "inm-42".into(),
        number_fingerprint: [3; 32],
        direction: Direction::Outbound,
        started_at: UnixMillis(1_764_000_000_000),
        ended_at: UnixMillis(1_764_000_060_000),
        byte_length: 480_000,
        chunk_count: 2,
        plaintext_digest: [9; 32],
        committed_under_policy: 1,
        sealed: false,
        lifecycle: Lifecycle::Live,
        holds: Vec::new(),
    }
}

fn registry_entry() -> RegistryEntry {
    RegistryEntry {
        jurisdiction: Jurisdiction::Tx,
        number: normalize("(512) 555-0100").unwrap(),
        kind: PrivilegeKind::Attorney,
        registrant: "tx-registry".into(),
        evidence: "TX bar 24012345".into(),
        registered_at: UnixMillis(1_764_000_000_000),
    }
}

fn report() -> AuthFailureReport {
    AuthFailureReport {
        node_id: 3,
        window_start: UnixMillis(1_764_000_000_000),
        window_end: UnixMillis(1_764_000_060_000),
        sources: vec![SourceFailures {
            peer: Some("203.0.113.9".parse().unwrap()),
            missing: 1,
            malformed: 2,
            unknown: 40,
            first_at: UnixMillis(1_764_000_000_100),
            last_at: UnixMillis(1_764_000_059_900),
            token_hash_prefix: Some([1, 2, 3, 4]),
            distinct_tokens: 2,
        }],
        other_failures: 5,
        reports_lost: 1,
    }
}

fn commands() -> Vec<Command> {
    let call_id = || CallId::new("tx-huntsville-000123").unwrap();
    let commit = Command::CommitCall {
        call: call(),
        wrapped_key: vec![1; 72],
        chunk_ids: vec![[2; 32], [3; 32]],
        principal: "tx-platform".into(),
        at: UnixMillis(1_764_000_061_000),
    };
    let register = Command::RegisterPrivileged {
        entry: registry_entry(),
        fingerprint: [3; 32],
    };
    vec![
        Command::PutPolicy {
            jurisdiction: Jurisdiction::Tx,
            policy: policy(),
            expected_version: 1,
            principal: "operator".into(),
            at: UnixMillis(9),
        },
        commit.clone(),
        register.clone(),
        Command::Batch(vec![commit.clone(), register]),
        Command::RegisterSensitive {
            jurisdiction: Jurisdiction::Ca,
            number: normalize("+1 415 555 0100").unwrap(),
            fingerprint: [4; 32],
            reason: "victim advocate".into(),
            principal: "ca-registry".into(),
            at: UnixMillis(7),
        },
        Command::FlagPrivileged {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(),
            reason: "attorney heard".into(),
            evidence: "review 12".into(),
            principal: "tx-registry".into(),
            at: UnixMillis(8),
        },
        Command::RecordAuthFailures(report()),
        Command::Expire {
            jurisdiction: Jurisdiction::Tx,
            as_of: UnixMillis(1_000),
            calls: vec![call_id()],
        },
        Command::PlaceHold {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(),
            issuer: "tx-da".into(),
            agency: "tx-da-office".into(),
            case_number: "2026-CR-17".into(),
            reason: "trial".into(),
            review_date: Some(UnixMillis(99)),
            at: UnixMillis(5),
        },
        Command::ReleaseHold {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(),
            hold_id: 17,
            principal: "tx-da".into(),
            agency: "tx-da-office".into(),
            at: UnixMillis(6),
        },
        Command::RecordAccess(AccessRequest {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(),
            principal: "tx-agency".into(),
            case_number: "2026-CR-17".into(),
            reason: "review".into(),
            elevated: false,
            denial: None,
            quota: AccessQuota {
                calls_per_hour: 10,
                bytes_per_hour: 1 << 30,
            },
            at: UnixMillis(7),
        }),
        Command::KeysShredded {
            node_id: 3,
            calls: vec![(Jurisdiction::Tx, call_id())],
            at: UnixMillis(8),
        },
        Command::ChunksCollected {
            shards: vec!["shard-a".into()],
            calls: vec![(Jurisdiction::Tx, call_id())],
            at: UnixMillis(9),
        },
        Command::OpenSession,
        Command::Session(SessionRequest {
            session: 41 << 10,
            seq: 7,
            acked_below: 6,
            command: Box::new(commit.clone()),
        }),
    ]
}

/// One encoded example of each record, in the order of [`RECORDS`].
fn records() -> Vec<Vec<Vec<u8>>> {
    let entry = AuditEntry::builder(
        4,
        UnixMillis(1_764_000_000_000),
        AuditEvent::PolicyChanged,
        "operator",
    )
    .jurisdiction(Jurisdiction::Tx)
    .subject("policy")
    .outcome("version 2")
    .detail("reason", "statute changed")
    .build()
    .unwrap();
    let mut held = call();
    held.lifecycle = Lifecycle::Expired {
        at: UnixMillis(1_800_000_000_000),
    };
    vec![
        commands().iter().map(VersionedRecord::encode).collect(),
        vec![
            CommandResult::PolicyPut { version: 2 }.encode(),
            CommandResult::Batch(vec![
                CommandResult::Empty,
                CommandResult::HoldPlaced { hold_id: 4 },
            ])
            .encode(),
        ],
        vec![call().encode(), held.encode()],
        vec![
            VersionedPolicy {
                version: 2,
                policy: policy(),
            }
            .encode(),
        ],
        vec![registry_entry().encode()],
        vec![entry.encode()],
        vec![
            Counters {
                calls_total: 9,
                live: 7,
                ..Counters::default()
            }
            .encode(),
        ],
        vec![
            SensitiveEntry {
                number: normalize("+1 415 555 0100").unwrap(),
                reason: "victim advocate".into(),
                registrant: "ca-registry".into(),
                registered_at: UnixMillis(7),
            }
            .encode(),
        ],
        vec![LogPosition { term: 3, index: 99 }.encode()],
        vec![
            ShredRecord {
                kind: ShredKind::Purge,
                started_at: UnixMillis(5),
                key_entry: 12,
                chunk_ids: vec![[2; 32]],
                meta_receipts: vec![1, 2],
                blob_done: false,
                shred_entry: 14,
                required: vec![1, 2, 3],
            }
            .encode(),
        ],
        vec![
            QuotaUse {
                hour: 490_000,
                calls: 2,
                bytes: 960_000,
            }
            .encode(),
        ],
        vec![report().encode()],
        vec![
            CallTombstone {
                outcome: TombstoneOutcome::Purged,
                at: UnixMillis(1_764_000_000_000),
            }
            .encode(),
        ],
        vec![
            SessionRecord {
                last_used: 77 << 10 | 3,
                acked_below: 5,
                pending: 2,
            }
            .encode(),
        ],
    ]
}

fn log_id(index: u64) -> LogId<u64> {
    LogId {
        leader_id: CommittedLeaderId::new(3, 1),
        index,
    }
}

fn raft_messages() -> Vec<(u8, Vec<u8>)> {
    let membership = Membership::new(
        vec![[1, 2, 3].into()],
        [1, 2, 3]
            .map(|id| {
                (
                    id,
                    MetaMember::new(format!("127.0.0.1:700{id}"), 0x1000 + id),
                )
            })
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
    );
    let entries: Vec<callvault_meta::types::Entry> = [
        EntryPayload::Blank,
        EntryPayload::Normal(commands().remove(1)),
        EntryPayload::Membership(membership.clone()),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, payload)| openraft::Entry {
        log_id: log_id(10 + i as u64),
        payload,
    })
    .collect();
    let vote = Vote::new_committed(3, 1);
    let append = pb::AppendEntriesRequest {
        vote: Some(convert::vote_to_pb(&vote)),
        prev_log_id: Some(convert::log_id_to_pb(&log_id(9))),
        entries: entries.iter().map(convert::entry_to_pb).collect(),
        leader_commit: Some(convert::log_id_to_pb(&log_id(9))),
    };
    let stored = openraft::StoredMembership::new(Some(log_id(12)), membership);
    let meta = pb::SnapshotMeta {
        last_log_id: Some(convert::log_id_to_pb(&log_id(12))),
        last_membership: Some(convert::stored_membership_to_pb(&stored)),
        snapshot_id: "3-12-1764000000".into(),
    };
    let mut messages = vec![
        (0, append.encode_to_vec()),
        (
            1,
            pb::AppendEntriesResponse {
                result: Some(pb::append_entries_response::Result::PartialSuccess(
                    pb::PartialSuccess {
                        matching: Some(convert::log_id_to_pb(&log_id(11))),
                    },
                )),
            }
            .encode_to_vec(),
        ),
        (
            2,
            pb::VoteRequest {
                vote: Some(convert::vote_to_pb(&Vote::new(4, 2))),
                last_log_id: Some(convert::log_id_to_pb(&log_id(12))),
            }
            .encode_to_vec(),
        ),
        (
            3,
            pb::VoteResponse {
                vote: Some(convert::vote_to_pb(&vote)),
                vote_granted: true,
                last_log_id: None,
            }
            .encode_to_vec(),
        ),
        (
            4,
            pb::InstallSnapshotRequest {
                vote: Some(convert::vote_to_pb(&vote)),
                meta: Some(meta.clone()),
                offset: 0,
                data: b"CVSNAP01".to_vec(),
                done: false,
            }
            .encode_to_vec(),
        ),
        (
            5,
            pb::InstallSnapshotResponse {
                vote: None,
                mismatch: Some(pb::SnapshotMismatch {
                    expect: Some(pb::SnapshotSegment {
                        id: "3-12".into(),
                        offset: 0,
                    }),
                    got: Some(pb::SnapshotSegment {
                        id: "3-12".into(),
                        offset: 4096,
                    }),
                }),
            }
            .encode_to_vec(),
        ),
        (6, meta.encode_to_vec()),
        (8, convert::to_disk(&convert::vote_to_pb(&vote))),
        (9, convert::to_disk(&convert::log_id_to_pb(&log_id(12)))),
        (
            10,
            convert::to_disk(&convert::stored_membership_to_pb(&stored)),
        ),
    ];
    for entry in &entries {
        messages.push((7, convert::to_disk(&convert::entry_to_pb(entry))));
    }
    messages
}

/// A packed snapshot of two small files, without its trailer (the check adds it).
fn snapshot_body(scratch: &Path) -> Vec<u8> {
    let src = scratch.join("checkpoint");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
    std::fs::write(src.join("000007.sst"), [7u8; 64]).unwrap();
    let meta = pb::SnapshotMeta {
        last_log_id: Some(convert::log_id_to_pb(&log_id(12))),
        last_membership: None,
        snapshot_id: "3-12".into(),
    };
    let out = scratch.join("snapshot");
    callvault_meta::snapshot::pack(&src, &meta, &out).unwrap();
    let mut bytes = std::fs::read(&out).unwrap();
    bytes.truncate(bytes.len() - 32);
    bytes
}

fn notes() -> Vec<(u8, String)> {
    let signer = signer();
    let checkpoint = Checkpoint::new(ORIGIN, 42, leaf_hash(b"x")).unwrap();
    let signed = checkpoint.sign(&signer).unwrap();
    let other = callvault_audit::NoteSigner::from_seed("witness.example", &[9; 32]).unwrap();
    let cosigned = format!(
        "{signed}{}",
        other
            .sign(&checkpoint.body())
            .unwrap()
            .rsplit_once("\n\n")
            .unwrap()
            .1
    );
    let skey = {
        use base64::Engine as _;
        let mut raw = vec![1u8];
        raw.extend_from_slice(&[7; 32]);
        format!(
            "PRIVATE+KEY+{ORIGIN}+{:08x}+{}",
            signer.key_id(),
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    };
    vec![
        (0, signer.sign("hello\nworld\n").unwrap()),
        (0, cosigned.clone()),
        (1, checkpoint.body()),
        (1, format!("{}extension line\n", checkpoint.body())),
        (2, signed),
        (2, cosigned),
        (3, signer.verifier().vkey()),
        (4, skey),
    ]
}

const PHONES: &[&str] = &[
    "(512) 555-0100",
    "+1 512 555 0100",
    "011 44 20 7946 0958",
    "00 49 30 901820",
    "tel:+1-415-555-0100",
    "tel:+1-415-555-0100;ext=12",
    "\u{FF0B}\u{FF11} \u{FF15}\u{FF11}\u{FF12} \u{FF15}\u{FF15}\u{FF15} \u{FF10}\u{FF11}\u{FF10}\u{FF10}",
    "1-800-FLOWERS",
    "555-0100",
    "+999 1234",
];

const PRINCIPALS: &str = "[[principal]]\nname = \"tx-agency\"\nrole = \"agency\"\n\
    jurisdictions = [\"US-TX\"]\ntoken_blake3 = \"aa00000000000000000000000000000000000000000000000000000000000000\"\n\
    agency = \"tx-da\"\nelevated = true\n\n[[principal]]\nname = \"ops\"\nrole = \"operator\"\n\
    jurisdictions = [\"*\"]\ntoken_blake3 = \"bb00000000000000000000000000000000000000000000000000000000000000\"\n";

/// Bytes from a fixed-seed generator, for the structured targets (any bytes make an input).
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn write(dir: &Path, target: &str, seeds: impl IntoIterator<Item = Vec<u8>>) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    // Seeds of an older encoding go; anything else in the folder stays.
    for item in std::fs::read_dir(&dir).unwrap() {
        let path = item.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("seed-")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    for bytes in seeds {
        let name = format!("seed-{}", &blake3::hash(&bytes).to_hex()[..16]);
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn with_selector(selector: u8, bytes: impl AsRef<[u8]>) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(bytes.as_ref());
    out
}

fn main() {
    let corpus = Path::new("fuzz/corpus");
    assert!(
        corpus.parent().unwrap().is_dir(),
        "run from the repository root"
    );
    let records = records();
    assert_eq!(records.len(), RECORDS.len(), "a seed for every record type");
    write(
        corpus,
        "command",
        commands().iter().map(VersionedRecord::encode),
    );
    write(
        corpus,
        "records",
        records.iter().enumerate().flat_map(|(i, encoded)| {
            encoded
                .iter()
                .map(move |bytes| with_selector(i as u8, bytes))
                .collect::<Vec<_>>()
        }),
    );
    write(
        corpus,
        "raft_messages",
        raft_messages()
            .into_iter()
            .map(|(s, bytes)| with_selector(s, bytes)),
    );
    let scratch = std::env::temp_dir().join(format!("callvault-seed-{}", std::process::id()));
    write(corpus, "snapshot", [snapshot_body(&scratch)]);
    std::fs::remove_dir_all(&scratch).unwrap();
    write(
        corpus,
        "phone",
        PHONES.iter().map(|p| p.as_bytes().to_vec()),
    );
    write(
        corpus,
        "ingest_stream",
        (0..4).map(|i| pseudo_random(i, 256)),
    );
    write(
        corpus,
        "audit_notes",
        notes().into_iter().map(|(s, text)| with_selector(s, text)),
    );
    write(
        corpus,
        "audit_proofs",
        (0..4).map(|i| pseudo_random(100 + i, 96)),
    );
    let policies = std::fs::read("deploy/policies/default.toml").unwrap();
    write(
        corpus,
        "policy_file",
        [
            policies,
            b"[defaults]\nrecording_retention_days = 0\n[jurisdiction.\"US-TX\"]\n".to_vec(),
        ],
    );
    write(corpus, "principals_file", [PRINCIPALS.as_bytes().to_vec()]);
}
