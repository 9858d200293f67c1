//! Issue 13, end to end against real `callvault` processes on loopback: no single pod, credential
//! or operator can read a recording.
//!
//! - the internal RPC matrix: every internal RPC × every role, and every proposable command ×
//!   every role, allowed exactly where the tables say;
//! - a proposal naming a principal whose proof it does not carry is refused by meta (invented,
//!   borrowed, altered, replayed), an approval of a retention change included;
//! - a key release without a matching allowed access, for another call, or a second time, is
//!   refused and logged;
//! - an insider holding every file an api pod and an ingest pod mounts decrypts nothing without a
//!   committed allowed access, and every attempt is in the audit log;
//! - an operator holding every secret but the keys role's gets no content;
//! - a recording wrapped before key custody (version 1) still plays back through the keys role.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callvault_blob::{
    CallOpener, JurisdictionKeyPairs, KeyCustodian, KeyRing, LocalCustodian, ReleaseKeyPair,
    WrappedDataKey,
};
use callvault_core::codec::VersionedRecord;
use callvault_core::{CallId, Jurisdiction, UnixMillis};
use callvault_meta::Command;
use callvault_meta::command::{AccessQuota, AccessRequest};
use callvault_meta::principal_proof::PrincipalProof;
use callvault_proto::auth::{AuthChannel, Bearer};
use callvault_proto::identity::{INTERNAL_RPCS, Role};
use callvault_proto::proof::SigningKey;
use callvault_proto::v1 as pb;
use callvault_tests::{DevCluster, TestCall, play_back};
use prost::Message;
use tonic::Code;

/// A channel to node `id` presenting `token` and nothing else (no signing).
fn raw(cluster: &DevCluster, id: u64, token: &str) -> AuthChannel {
    Bearer::new(token)
        .expect("token")
        .channel(cluster.nodes[id as usize - 1].channel())
}

/// Calls `path` with an empty message, as whoever `channel` presents.
async fn call_empty(channel: AuthChannel, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        return tonic::Status::unavailable(e.to_string());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc
        .unary(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
    {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

/// Whether a status is the internal gate's refusal (the table said no).
fn refused_by_table(status: &tonic::Status) -> bool {
    status.code() == Code::PermissionDenied
        && (status.message().contains("may not call")
            || status.message().contains("may not propose"))
}

fn playback(call: &str) -> pb::PlaybackRequest {
    pb::PlaybackRequest {
        jurisdiction: "US-TX".into(),
        call_id: call.into(),
        case_number: "2026-CR-0013".into(),
        reason: "trust test".into(),
    }
}

async fn ingest(cluster: &DevCluster, call: &TestCall) {
    let mut client = cluster.ingest(1, cluster.token("platform"));
    let ack = call.send(&mut client).await.expect("ingested");
    assert_eq!(ack.decision, pb::Decision::Recorded as i32, "{ack:?}");
}

/// Every audit entry so far, as the auditor reads them.
async fn audit_entries(cluster: &DevCluster) -> Vec<pb::AuditEntry> {
    let mut audit = cluster.audit(1, cluster.token("auditor"));
    let mut entries = Vec::new();
    let mut start = 0;
    loop {
        let page = audit
            .get_entries(pb::GetEntriesRequest {
                start,
                end: start + 1000,
            })
            .await
            .expect("entries")
            .into_inner();
        entries.extend(page.entries);
        start += 1000;
        if start >= page.tree_size {
            return entries;
        }
    }
}

fn count(entries: &[pb::AuditEntry], event: &str) -> usize {
    entries.iter().filter(|e| e.event == event).count()
}

/// Proposes `command` to node `id` as `role`, the way an insider holding that role's credential
/// could; the status or the result.
async fn propose_as(
    cluster: &DevCluster,
    id: u64,
    role: Role,
    command: &Command,
) -> Result<callvault_meta::CommandResult, tonic::Status> {
    let mut meta =
        pb::meta_store_client::MetaStoreClient::new(raw(cluster, id, &cluster.role_token(role)));
    let response = meta
        .propose(pb::ProposeRequest {
            command: command.encode(),
        })
        .await?
        .into_inner();
    Ok(callvault_meta::CommandResult::decode(&response.result).expect("a result"))
}

/// A `RecordAccess` for `call`, as an api node would build it for `principal`.
fn access(principal: &str, call: &str, recipient: Option<Vec<u8>>) -> Command {
    Command::RecordAccess(AccessRequest {
        jurisdiction: Jurisdiction::Tx,
        call_id: CallId::new(call).unwrap(),
        principal: principal.into(),
        case_number: "2026-CR-0013".into(),
        reason: "trust test".into(),
        elevated: false,
        denial: None,
        quota: AccessQuota {
            calls_per_hour: 60,
            bytes_per_hour: 1 << 30,
        },
        at: UnixMillis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
        ),
        recipient,
    })
}

/// `command` wrapped with a proof `key` signs of `request` to Playback, naming `principal`.
fn signed_access(
    principal: &str,
    key: &SigningKey,
    request: &pb::PlaybackRequest,
    command: Command,
) -> Command {
    let header = key.prove(
        callvault_meta::intents::rpc::PLAYBACK,
        &request.encode_to_vec(),
    );
    let Command::RecordAccess(mut access) = command else {
        unreachable!()
    };
    access.at = UnixMillis(header.time_ms);
    Command::Signed {
        proof: PrincipalProof::new(
            principal,
            callvault_meta::intents::rpc::PLAYBACK,
            request,
            &header,
        ),
        command: Box::new(Command::RecordAccess(access)),
    }
}

fn dev_key(cluster: &DevCluster, name: &str) -> SigningKey {
    let var = format!(
        "CALLVAULT_DEV_{}_KEY",
        name.to_uppercase().replace('-', "_")
    );
    SigningKey::load(Path::new(cluster.var(&var))).expect("dev principal key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_rpc_matrix_allows_each_role_exactly_what_the_table_says() {
    let (cluster, _permit) = DevCluster::start().await;
    let mut paths: BTreeSet<&str> = BTreeSet::new();
    for row in INTERNAL_RPCS {
        paths.insert(row.path);
        for role in Role::ALL {
            let status = call_empty(raw(&cluster, 2, &cluster.role_token(role)), row.path).await;
            let allowed = row.roles.contains(&role);
            assert_eq!(
                refused_by_table(&status),
                !allowed,
                "{} as {role}: {status:?}",
                row.path
            );
            assert_ne!(
                status.code(),
                Code::Unauthenticated,
                "{} as {role}",
                row.path
            );
        }
        // Without any credential an internal RPC is never answered.
        let bare = call_empty(
            callvault_proto::auth::Bearer::none().channel(cluster.nodes[1].channel()),
            row.path,
        )
        .await;
        assert_eq!(
            bare.code(),
            Code::Unauthenticated,
            "{} bare: {bare:?}",
            row.path
        );
    }
    // The table names every method the internal services have.
    let set = prost_types::FileDescriptorSet::decode(callvault_proto::FILE_DESCRIPTOR_SET).unwrap();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                if callvault_proto::identity::is_internal(&path) {
                    assert!(
                        paths.contains(path.as_str()),
                        "{path} has no row in the table"
                    );
                }
            }
        }
    }

    // Proposals: every command kind × every role, as `callvault_meta::authz` says.
    for command in sample_commands() {
        for role in Role::ALL {
            let allowed = callvault_meta::authz::proposers(&command).contains(&role);
            let outcome = propose_as(&cluster, 3, role, &command).await;
            let refused = matches!(&outcome, Err(s) if refused_by_table(s));
            // Meta may call Propose but the blob role may not call it at all.
            let may_call = INTERNAL_RPCS
                .iter()
                .any(|r| r.path == "/callvault.v1.MetaStore/Propose" && r.roles.contains(&role));
            assert_eq!(
                refused,
                !(allowed && may_call),
                "{} as {role}: {outcome:?}",
                command.kind()
            );
        }
    }
}

/// One command of every kind, harmless to apply (unknown calls, nothing due).
fn sample_commands() -> Vec<Command> {
    let at = UnixMillis(1);
    let call = CallId::new("matrix-none").unwrap();
    let samples = vec![
        callvault_tests::commit(990_001),
        callvault_tests::tx_policy(),
        Command::Expire {
            jurisdiction: Jurisdiction::Tx,
            as_of: at,
            calls: Vec::new(),
        },
        Command::KeysShredded {
            node_id: 99,
            calls: Vec::new(),
            at,
        },
        Command::ChunksCollected {
            shards: Vec::new(),
            calls: Vec::new(),
            at,
        },
        access("dev-agency-tx", "matrix-none", None),
        Command::ReleaseHold {
            jurisdiction: Jurisdiction::Tx,
            call_id: call.clone(),
            hold_id: 1,
            principal: "dev-agency-tx".into(),
            agency: "dev-agency-tx".into(),
            at,
        },
        Command::FlagPrivileged {
            jurisdiction: Jurisdiction::Tx,
            call_id: call,
            reason: "r".into(),
            evidence: String::new(),
            principal: "dev-agency-tx".into(),
            at,
        },
        Command::ReleaseKey(callvault_meta::custody::KeyRelease {
            access: u64::MAX,
            keys_node: "matrix".into(),
            withheld: Some("matrix test".into()),
            at,
        }),
    ];
    for command in &samples {
        covered(command);
    }
    samples
}

/// Fails to compile when a command is added without a thought about this test.
fn covered(command: &Command) {
    match command {
        Command::PutPolicy { .. }
        | Command::CommitCall { .. }
        | Command::RegisterPrivileged { .. }
        | Command::RegisterSensitive { .. }
        | Command::FlagPrivileged { .. }
        | Command::RecordAuthFailures(_)
        | Command::Batch(_)
        | Command::Expire { .. }
        | Command::PlaceHold { .. }
        | Command::ReleaseHold { .. }
        | Command::RecordAccess(_)
        | Command::KeysShredded { .. }
        | Command::ChunksCollected { .. }
        | Command::Session(_)
        | Command::OpenSession
        | Command::Signed { .. }
        | Command::RecordMetadataRead(_)
        | Command::Retention(_)
        | Command::ReleaseKey(_)
        | Command::ProofRefused(_) => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_naming_a_principal_whose_proof_it_does_not_carry_is_refused() {
    let (cluster, _permit) = DevCluster::start().await;
    let call = TestCall::new("proof-1", "US-TX", "+15125550160", 2, 1);
    ingest(&cluster, &call).await;
    let request = playback("proof-1");
    let before = count(&audit_entries(&cluster).await, "content.access.allowed");

    // Invented: no proof at all.
    let invented = propose_as(
        &cluster,
        2,
        Role::Api,
        &access("dev-agency-tx", "proof-1", None),
    )
    .await;
    assert_eq!(invented.unwrap_err().code(), Code::Unauthenticated);
    // One refusal entry a second per caller: wait so each of these is logged.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Borrowed: agency-ca's own valid proof, on a command acting for agency-tx.
    let ca = dev_key(&cluster, "agency-ca");
    let borrowed = signed_access(
        "dev-agency-ca",
        &ca,
        &request,
        access("dev-agency-tx", "proof-1", None),
    );
    assert_eq!(
        propose_as(&cluster, 2, Role::Api, &borrowed)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // One refusal entry a second per caller: wait so each of these is logged.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Forged: a proof naming agency-tx signed with another key.
    let forged = signed_access(
        "dev-agency-tx",
        &ca,
        &request,
        access("dev-agency-tx", "proof-1", None),
    );
    assert_eq!(
        propose_as(&cluster, 2, Role::Api, &forged)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // One refusal entry a second per caller: wait so each of these is logged.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Altered: agency-tx's proof for one call on a command for another.
    let tx = dev_key(&cluster, "agency-tx");
    let altered = signed_access(
        "dev-agency-tx",
        &tx,
        &request,
        access("dev-agency-tx", "proof-2", None),
    );
    assert_eq!(
        propose_as(&cluster, 2, Role::Api, &altered)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // Genuine, then replayed.
    let genuine = signed_access(
        "dev-agency-tx",
        &tx,
        &request,
        access("dev-agency-tx", "proof-1", None),
    );
    let first = propose_as(&cluster, 2, Role::Api, &genuine)
        .await
        .expect("a genuine proof passes");
    assert!(
        matches!(first, callvault_meta::CommandResult::AccessDecided { .. }),
        "{first:?}"
    );
    let replayed = propose_as(&cluster, 3, Role::Api, &genuine)
        .await
        .expect("decided in apply");
    assert!(
        matches!(
            replayed,
            callvault_meta::CommandResult::Refused(callvault_meta::Refusal::ProofReplayed)
        ),
        "{replayed:?}"
    );
    let entries = audit_entries(&cluster).await;
    assert_eq!(
        count(&entries, "content.access.allowed"),
        before + 1,
        "one access, not two"
    );
    assert!(
        count(&entries, "principal.proof_refused") >= 4,
        "refused proofs are logged: {:?}",
        entries.iter().map(|e| &e.event).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_release_without_an_allowed_access_for_another_call_or_twice_is_refused() {
    let (cluster, _permit) = DevCluster::start().await;
    for (id, seed) in [("rel-1", 1), ("rel-2", 2)] {
        ingest(
            &cluster,
            &TestCall::new(id, "US-TX", "+15125550161", 2, seed),
        )
        .await;
    }
    let mut keys =
        pb::keys_client::KeysClient::new(raw(&cluster, 1, &cluster.role_token(Role::Api)));
    let release = |access: u64| pb::ReleaseRequest {
        access_record: access,
    };
    // No such access.
    let none = keys.release(release(999_999)).await.unwrap_err();
    assert_eq!(none.code(), Code::PermissionDenied, "{none:?}");

    // An allowed access for rel-1, through the api as a principal would make it.
    let one_time = ReleaseKeyPair::generate().unwrap();
    let tx = dev_key(&cluster, "agency-tx");
    let granted = signed_access(
        "dev-agency-tx",
        &tx,
        &playback("rel-1"),
        access("dev-agency-tx", "rel-1", Some(one_time.public_key())),
    );
    let record = match propose_as(&cluster, 2, Role::Api, &granted).await.unwrap() {
        callvault_meta::CommandResult::AccessDecided { record, decision } => {
            assert!(matches!(
                decision,
                callvault_meta::command::AccessDecision::Allowed { .. }
            ));
            record
        }
        other => panic!("{other:?}"),
    };
    // A denied access (another jurisdiction's principal asking) has no key.
    let ca = dev_key(&cluster, "agency-ca");
    let mut ca_request = playback("rel-2");
    ca_request.jurisdiction = "US-CA".into();
    let denied = signed_access("dev-agency-ca", &ca, &ca_request, {
        let Command::RecordAccess(mut a) =
            access("dev-agency-ca", "rel-2", Some(one_time.public_key()))
        else {
            unreachable!()
        };
        a.jurisdiction = Jurisdiction::Ca;
        Command::RecordAccess(a)
    });
    if let Ok(callvault_meta::CommandResult::AccessDecided { record, .. }) =
        propose_as(&cluster, 2, Role::Api, &denied).await
    {
        assert_eq!(
            keys.release(release(record)).await.unwrap_err().code(),
            Code::PermissionDenied
        );
    }

    // The allowed one: released once, sealed to the one-time key, opening rel-1 only.
    let sealed = keys
        .release(release(record))
        .await
        .expect("released")
        .into_inner();
    let call1 = CallId::new("rel-1").unwrap();
    let key = one_time
        .open(record, Jurisdiction::Tx, &call1, &sealed.released_key)
        .expect("opens for rel-1");
    assert!(
        one_time
            .open(
                record,
                Jurisdiction::Tx,
                &CallId::new("rel-2").unwrap(),
                &sealed.released_key
            )
            .is_err(),
        "bound to its call"
    );
    let chunk = first_chunk(&cluster, "rel-1").await;
    assert!(
        CallOpener::with_key(&call1, Jurisdiction::Tx, &key)
            .open(0, &chunk)
            .is_ok()
    );
    // Twice: refused.
    let again = keys.release(release(record)).await.unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied, "{again:?}");
    assert!(again.message().contains("already released"), "{again:?}");

    let entries = audit_entries(&cluster).await;
    assert_eq!(count(&entries, "key.released"), 1);
    assert!(
        count(&entries, "key.release.denied") >= 2,
        "every refusal is logged"
    );
}

/// The sealed bytes of `call`'s first chunk, read from a shard as the blob role.
async fn first_chunk(cluster: &DevCluster, call: &str) -> Vec<u8> {
    let read = cluster
        .meta(1)
        .read_call(pb::ReadCallRequest {
            jurisdiction: "US-TX".into(),
            call_id: call.into(),
            local: false,
        })
        .await
        .expect("read call")
        .into_inner();
    let mut pieces = cluster
        .shard(1)
        .get_chunk(pb::GetChunkRequest {
            chunk_id: read.chunk_ids[0].clone(),
        })
        .await
        .expect("a replica on shard 1")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(piece) = pieces.message().await.expect("piece") {
        bytes.extend(piece.data);
    }
    bytes
}

/// Every 32-byte secret (64 hex characters) and every key file in `files`, tried as a key of
/// every kind against `wrapped`: none may open it.
fn nothing_in_opens(files: &[PathBuf], call: &CallId, wrapped: &WrappedDataKey) {
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        // As a whole file: a private-key file or a KEK file.
        if let Ok(pairs) = JurisdictionKeyPairs::parse(&text, "probe") {
            let custodian = LocalCustodian::new(pairs, KeyRing::new());
            assert!(
                custodian.unwrap(call, Jurisdiction::Tx, wrapped).is_err(),
                "{}",
                file.display()
            );
        }
        if let Ok(ring) = KeyRing::parse(&text, "probe") {
            assert!(
                ring.unwrap(call, Jurisdiction::Tx, wrapped).is_err(),
                "{}",
                file.display()
            );
        }
        // Every 64-hex run, as a KEK or an X-Wing seed of Texas.
        for word in text.split(|c: char| !c.is_ascii_hexdigit()) {
            if word.len() != 64 {
                continue;
            }
            let kek = format!("\"US-TX\" = \"{word}\"");
            let ring = KeyRing::parse(&kek, "probe").unwrap();
            assert!(
                ring.unwrap(call, Jurisdiction::Tx, wrapped).is_err(),
                "{}",
                file.display()
            );
            let pairs = JurisdictionKeyPairs::parse(&kek, "probe").unwrap();
            let custodian = LocalCustodian::new(pairs, KeyRing::new());
            assert!(
                custodian.unwrap(call, Jurisdiction::Tx, wrapped).is_err(),
                "{}",
                file.display()
            );
        }
    }
}

/// The wrapped key of `call`, read from a stopped meta node's data directory (what an operator
/// with the volumes has).
fn wrapped_from_volume(data_dir: &Path, call: &str) -> WrappedDataKey {
    let bytes = callvault_tests::wrapped_keys_on_volume(data_dir, &[call.to_string()]).remove(0);
    WrappedDataKey::from_bytes(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insider_with_every_api_and_ingest_file_decrypts_nothing_without_a_logged_access() {
    let (mut cluster, _permit) = DevCluster::start().await;
    let call = TestCall::new("insider-1", "US-TX", "+15125550162", 3, 7);
    ingest(&cluster, &call).await;
    let id = CallId::new("insider-1").unwrap();
    let before = audit_entries(&cluster).await.len();

    // Every file an api pod and an ingest pod mount (the table `callvault dev` lays out).
    let files = cluster.role_files(&[Role::Api, Role::Ingest]);
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("jurisdiction-keys.pub.toml"))
    );
    assert!(!files.iter().any(|f| f.ends_with("jurisdiction-keys.toml")));

    // With the api role: content reads give chunk ids and no key...
    let api = cluster.role_token(Role::Api);
    let mut meta = pb::meta_store_client::MetaStoreClient::new(raw(&cluster, 2, &api));
    let content = meta
        .read_content(pb::ReadContentRequest {
            jurisdiction: "US-TX".into(),
            call_id: "insider-1".into(),
            access_record: 0,
        })
        .await;
    assert!(
        content.is_err(),
        "content without an access record: {content:?}"
    );
    // ...released keys are the keys role's only...
    for path in [
        "/callvault.v1.MetaStore/ReadReleasedKey",
        "/callvault.v1.MetaStore/ReadAccess",
    ] {
        assert!(refused_by_table(
            &call_empty(raw(&cluster, 2, &api), path).await
        ));
    }
    // ...a key release without an access is refused and logged...
    let mut keys = pb::keys_client::KeysClient::new(raw(&cluster, 2, &api));
    for access in [0, 1, 2, u64::MAX] {
        assert!(
            keys.release(pb::ReleaseRequest {
                access_record: access
            })
            .await
            .is_err()
        );
    }
    // ...an access the insider invents is refused and logged.
    let invented = propose_as(
        &cluster,
        2,
        Role::Api,
        &access("dev-agency-tx", "insider-1", None),
    )
    .await;
    assert!(invented.is_err());

    // No file either pod mounts opens the wrapped key, which only meta's volume holds.
    cluster.nodes[2].stop();
    let wrapped = wrapped_from_volume(&cluster.nodes[2].data_dir(), "insider-1");
    cluster.nodes[2].start();
    // Node 3 serves the playback below: wait until it caught up again.
    callvault_tests::eventually("node 3 is ready again", Duration::from_secs(60), || async {
        cluster.nodes[2].is_ready().await.then_some(())
    })
    .await;
    assert_eq!(wrapped.version(), 2, "ingest sealed it to the public key");
    nothing_in_opens(&files, &id, &wrapped);

    let entries = audit_entries(&cluster).await;
    let new = &entries[before..];
    assert!(
        count(new, "key.release.denied") >= 4,
        "every release attempt is logged"
    );
    assert!(
        count(new, "principal.proof_refused") >= 1,
        "the invented access is logged"
    );
    assert_eq!(count(new, "key.released"), 0);

    // A principal's allowed access, through the api, does play back: the system works.
    let audio = play_back(
        cluster.content(3, cluster.token("agency-tx")),
        playback("insider-1"),
    )
    .await
    .expect("an allowed access plays back");
    assert_eq!(audio, call.audio());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_with_every_secret_but_the_keys_roles_gets_no_content() {
    let (mut cluster, _permit) = DevCluster::start().await;
    let call = TestCall::new("operator-1", "US-TX", "+15125550163", 2, 9);
    ingest(&cluster, &call).await;
    let id = CallId::new("operator-1").unwrap();
    let operator = cluster.token("operator");
    // The operator's own principal: no playback.
    let denied = play_back(cluster.content(1, operator), playback("operator-1"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // Signed by itself, acting for an agency: refused by meta.
    let op_key = dev_key(&cluster, "operator");
    let as_agency = signed_access(
        "dev-agency-tx",
        &op_key,
        &playback("operator-1"),
        access("dev-agency-tx", "operator-1", None),
    );
    assert!(
        propose_as(&cluster, 1, Role::Meta, &as_agency)
            .await
            .is_err()
    );
    // Every secret but the keys role's, and the volumes: nothing opens the key.
    let files = cluster.role_files(&[Role::Meta, Role::Blob, Role::Ingest, Role::Api]);
    assert!(!files.iter().any(|f| f.ends_with("jurisdiction-keys.toml")));
    cluster.nodes[0].stop();
    let wrapped = wrapped_from_volume(&cluster.nodes[0].data_dir(), "operator-1");
    cluster.nodes[0].start();
    nothing_in_opens(&files, &id, &wrapped);
    // With the meta role's credential, a release is still refused: keys serves the api only.
    let mut keys =
        pb::keys_client::KeysClient::new(raw(&cluster, 2, &cluster.role_token(Role::Meta)));
    let refused = keys
        .release(pb::ReleaseRequest { access_record: 1 })
        .await
        .unwrap_err();
    assert!(refused_by_table(&refused), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_wrapped_before_key_custody_still_plays_back_through_the_keys_role() {
    // A dev directory from before key custody has its KEKs; `callvault dev` hands them to the
    // keys role only. The call is committed as old ingest nodes did: a version-1 wrapped key.
    let (cluster, _permit) = DevCluster::start_with_legacy_keks().await;
    let kek = KeyRing::load_file(&cluster.secret("keks.toml")).expect("the old KEKs");
    let call = TestCall::new("legacy-1", "US-TX", "+15125550164", 2, 3);
    cluster.commit_v1(&call, &kek).await;
    let audio = play_back(
        cluster.content(2, cluster.token("agency-tx")),
        playback("legacy-1"),
    )
    .await
    .expect("a version-1 recording plays back");
    assert_eq!(audio, call.audio());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reads_are_logged_charged_and_a_bulk_export_needs_a_second_approver() {
    // Four reads an hour, and two records an hour before a read is a bulk export.
    let (cluster, _permit) =
        DevCluster::start_with("[query]\nrequests_per_hour = 4\nbulk_records_per_hour = 2\n").await;
    for (i, id) in ["meta-1", "meta-2", "meta-3"].into_iter().enumerate() {
        ingest(
            &cluster,
            &TestCall::new(id, "US-TX", "+15125550165", 1, i as u8),
        )
        .await;
    }
    let before = audit_entries(&cluster).await.len();

    // A listing of three records is a bulk export: refused without a second approver, and
    // logged once with its count.
    let mut tx = cluster.query(2, cluster.token("agency-tx"));
    let list = pb::ListCallsRequest {
        jurisdiction: "US-TX".into(),
        page_size: 10,
        ..Default::default()
    };
    let bulk = tx.list_calls(list.clone()).await.unwrap_err();
    assert_eq!(bulk.code(), Code::FailedPrecondition, "{bulk:?}");
    assert!(bulk.message().contains("bulk export"), "{bulk:?}");
    // A page within the allowance is answered, and logged with its count.
    let page = tx
        .list_calls(pb::ListCallsRequest {
            page_size: 2,
            ..list.clone()
        })
        .await
        .expect("two records are within the allowance")
        .into_inner();
    assert_eq!(page.calls.len(), 2);

    // Another principal: every status read is an entry, and the fifth is over quota.
    let mut ca = cluster.query(3, cluster.token("agency-ca"));
    let status = pb::CallStatusRequest {
        jurisdiction: "US-CA".into(),
        call_id: "none-such".into(),
    };
    for _ in 0..4 {
        let read = ca.call_status(status.clone()).await.unwrap_err();
        assert_eq!(read.code(), Code::NotFound, "{read:?}");
    }
    for _ in 0..3 {
        let over = ca.call_status(status.clone()).await.unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    }
    // The reads need a principal's signature: the api cannot read metadata on its own.
    let api = raw(&cluster, 1, &cluster.role_token(Role::Api));
    for path in [
        "/callvault.v1.MetaStore/ListCallRecords",
        "/callvault.v1.MetaStore/ReadCall",
        "/callvault.v1.MetaStore/ReadCounters",
    ] {
        assert!(
            refused_by_table(&call_empty(api.clone(), path).await),
            "{path}"
        );
    }

    let entries = audit_entries(&cluster).await;
    let new = &entries[before..];
    let reads: Vec<&pb::AuditEntry> = new.iter().filter(|e| e.event == "metadata.read").collect();
    // tx: the refused bulk export and the page; ca: four status reads.
    assert_eq!(reads.len(), 6, "{reads:?}");
    assert!(
        reads
            .iter()
            .any(|e| e.principal == "dev-agency-tx" && e.outcome.contains("bulk export")),
        "{reads:?}"
    );
    assert!(
        reads
            .iter()
            .any(|e| e.principal == "dev-agency-tx" && e.outcome == "allowed: 2 records"),
        "{reads:?}"
    );
    // Three denials over quota, one entry: a principal cannot flood the log.
    let denied: Vec<&pb::AuditEntry> = new
        .iter()
        .filter(|e| e.event == "quota.denied" && e.principal == "dev-agency-ca")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
}

/// Retention's two-person changes act for people too: an approval an api node makes up, naming
/// a registry principal without that principal's proof, is refused by meta and approves
/// nothing; the registry principal's own signed request then approves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_without_the_approvers_proof_is_refused() {
    let (cluster, _permit) = DevCluster::start().await;
    let call = TestCall::new("approve-1", "US-TX", "+15125550161", 2, 2);
    ingest(&cluster, &call).await;
    let requested = cluster
        .admin(1, cluster.token("agency-tx"))
        .request_privilege_flag(pb::FlagPrivilegedRequest {
            jurisdiction: "US-TX".into(),
            call_id: "approve-1".into(),
            reason: "attorney heard on review".into(),
            evidence: "review 13".into(),
        })
        .await
        .expect("an agency's signed request")
        .into_inner()
        .change
        .expect("the pending change");
    let change_id: u64 = requested.change_id.parse().expect("a change id");
    let principals =
        callvault_meta::principal::Principals::load(&cluster.secret("principals.toml")).unwrap();
    let registry = principals
        .by_name("dev-registry")
        .expect("the dev registry");
    let forged = Command::Retention(
        callvault_meta::retention_command::RetentionCommand::ApproveChange {
            change_id,
            approver: callvault_meta::intents::actor(registry),
            at: UnixMillis(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64,
            ),
        },
    );
    let refused = propose_as(&cluster, 2, Role::Api, &forged)
        .await
        .expect_err("no proof of the approver");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let approved = cluster
        .admin(2, cluster.token("registry"))
        .approve_change(pb::ChangeRequest {
            jurisdiction: "US-TX".into(),
            change_id: requested.change_id.clone(),
        })
        .await
        .expect("the registry principal's signed approval")
        .into_inner()
        .change
        .expect("the change");
    assert_eq!(approved.state, pb::ChangeState::Effected as i32);
    let entries = audit_entries(&cluster).await;
    assert!(
        count(&entries, "principal.proof_refused") >= 1,
        "the made-up approval is logged"
    );
}
