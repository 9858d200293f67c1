//! `[tls]` end to end, with real `callvault serve` processes on loopback: the local config set
//! with TLS turned on forms its cluster (raft, joins and forwarding over TLS), ingests a call
//! (ingest → blob shards and ingest → meta over TLS), plays it back (api → blob shards over TLS)
//! and takes the CLI's commands over TLS; a plaintext client, and a client that trusts another
//! CA, get nothing from the node's port or its shard's; the kubelet's plaintext health port
//! answers with statuses only; a client certificate proves the role its subject names.

use std::path::Path;
use std::time::Duration;

use callvault_proto::auth::Bearer;
use callvault_proto::v1 as pb;
use callvault_tests::{LocalSet, ServingStatus, TestCall, callvault_bin, free_port, play_back};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// A CA and one certificate it issued for `127.0.0.1` and `localhost`, naming the four roles of
/// the local set's processes, written as PEM files.
struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_pem: String,
}

impl TestPki {
    fn write(dir: &Path) -> Self {
        let ca = Self::issuer("callvault test CA");
        let (node_cert, node_key) = Self::issue(&ca, "callvault-meta+blob+ingest+api");
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("node.pem"), node_cert).unwrap();
        std::fs::write(dir.join("node.key"), node_key).unwrap();
        let ca_pem = ca.pem();
        TestPki { ca, ca_pem }
    }

    /// A certificate `issuer` signs for the loopback names, with `unit` as its subject's
    /// organizational unit (what names roles); PEM of the certificate and of its key.
    fn issue(issuer: &CertifiedIssuer<'static, KeyPair>, unit: &str) -> (String, String) {
        let key = KeyPair::generate().expect("node key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("node names");
        params
            .distinguished_name
            .push(DnType::CommonName, "test-node");
        if !unit.is_empty() {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, unit);
        }
        let cert = params.signed_by(&key, issuer).expect("node cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A MetaStore client of `addr` over TLS presenting a certificate naming `unit`, no token.
    fn meta_client_as(
        &self,
        addr: &str,
        unit: &str,
    ) -> pb::meta_store_client::MetaStoreClient<tonic::transport::Channel> {
        let (cert, key) = Self::issue(&self.ca, unit);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(cert, key));
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        pb::meta_store_client::MetaStoreClient::new(channel)
    }

    /// A self-signed CA named `name`.
    fn issuer(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
    }
}

/// A Health client of `addr` over plaintext, or over TLS trusting `ca_pem`.
async fn health_check(addr: &str, ca_pem: Option<&str>, service: &str) -> Result<i32, String> {
    let endpoint = match ca_pem {
        Some(ca) => Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .unwrap(),
        None => Endpoint::from_shared(format!("http://{addr}")).unwrap(),
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_config_set_with_tls_serves_and_dials_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::write(dir.path());
    let mut set = LocalSet::write(dir.path());
    let health_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for (node, port) in set.nodes.iter_mut().zip(&health_ports) {
        node.append_config(&format!(
            "[tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\nhealth_listen_addr = \"127.0.0.1:{port}\"\n",
            dir.path().join("ca.pem"),
            dir.path().join("node.pem"),
            dir.path().join("node.key"),
        ));
        node.use_tls(&pki.ca_pem);
    }
    set.start_and_wait_ready().await;
    let nodes = &set.nodes;
    let status = pb::cluster_client::ClusterClient::new(
        nodes[2].with_token(&set.role_token(callvault_tests::Role::Meta)),
    )
    .status(pb::StatusRequest {})
    .await
    .expect("status over TLS")
    .into_inner();
    assert_eq!(
        status.members.iter().filter(|m| m.voter).count(),
        3,
        "{status:?}"
    );

    // The CLI trusts the CA named by CALLVAULT_TLS_CA_FILE.
    let put = std::process::Command::new(callvault_bin())
        .args([
            "policy",
            "put-all",
            "--file",
            "deploy/policies/default.toml",
        ])
        .args(["--addr", &nodes[0].addr])
        .env("CALLVAULT_TOKEN", set.token("OPERATOR"))
        .env("CALLVAULT_TLS_CA_FILE", dir.path().join("ca.pem"))
        .current_dir(callvault_tests::repo_root())
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    // Without it, the CLI speaks plaintext to a TLS port and fails, saying where.
    let plain = std::process::Command::new(callvault_bin())
        .args(["policy", "get", "US-TX"])
        .args(["--addr", &nodes[0].addr])
        .env("CALLVAULT_TOKEN", set.token("OPERATOR"))
        .current_dir(callvault_tests::repo_root())
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plaintext CLI got an answer");

    // Ingest through node 2 writes to the shards and commits through meta, all over TLS.
    let call = TestCall::new("tls-1", "US-TX", "+15125550100", 3, 4);
    let mut ingest =
        pb::ingest_client::IngestClient::new(nodes[1].with_token(&set.token("PLATFORM")));
    let ack = call.send(&mut ingest).await.expect("ingested over TLS");
    assert_eq!(ack.decision, pb::Decision::Recorded as i32, "{ack:?}");
    // Playback through node 3 reads the chunks back from the shards over TLS.
    let audio = play_back(
        pb::content_client::ContentClient::new(nodes[2].with_token(&set.token("AGENCY_TX"))),
        pb::PlaybackRequest {
            jurisdiction: "US-TX".into(),
            call_id: "tls-1".into(),
            case_number: "2026-CR-0500".into(),
            reason: "tls end to end".into(),
        },
    )
    .await
    .expect("playback over TLS");
    assert_eq!(audio, call.audio());

    // Plaintext gets nothing from a node's port or its shard's; neither does a client that
    // trusts another CA (a stranger's certificate would fail the same check on a node).
    let stranger = TestPki::issuer("someone else's CA").pem();
    let service = callvault_tests::META_READINESS_SERVICE;
    for addr in std::iter::once(nodes[0].addr.clone()).chain(set.shard_addrs()) {
        let plain = health_check(&addr, None, "").await;
        assert!(plain.is_err(), "{addr} answered plaintext: {plain:?}");
        let wrong_ca = health_check(&addr, Some(&stranger), "").await;
        assert!(wrong_ca.is_err(), "{addr} passed another CA's check");
    }
    let peer_rpc = pb::meta_store_client::MetaStoreClient::new(
        Bearer::new(&set.role_token(callvault_tests::Role::Meta))
            .unwrap()
            .channel(
                Endpoint::from_shared(format!("http://{}", nodes[0].addr))
                    .unwrap()
                    .connect_lazy(),
            ),
    )
    .state_digest(pb::StateDigestRequest {})
    .await;
    assert!(peer_rpc.is_err(), "a plaintext peer RPC was answered");

    // A client certificate is a role identity: the table admits the role it names, without a
    // token; another role's certificate, or one naming no role, gets nothing.
    let as_meta = pki
        .meta_client_as(&nodes[0].addr, "callvault-meta")
        .state_digest(pb::StateDigestRequest {})
        .await;
    assert!(as_meta.is_ok(), "{as_meta:?}");
    let as_blob = pki
        .meta_client_as(&nodes[0].addr, "callvault-blob")
        .state_digest(pb::StateDigestRequest {})
        .await
        .expect_err("a blob certificate reads no state digest");
    assert_eq!(as_blob.code(), tonic::Code::PermissionDenied, "{as_blob:?}");
    let as_nobody = pki
        .meta_client_as(&nodes[0].addr, "")
        .state_digest(pb::StateDigestRequest {})
        .await
        .expect_err("a certificate naming no role proves none");
    assert_eq!(
        as_nobody.code(),
        tonic::Code::Unauthenticated,
        "{as_nobody:?}"
    );

    // The probe port answers health in plaintext, and nothing else.
    for port in &health_ports {
        let addr = format!("127.0.0.1:{port}");
        assert_eq!(
            health_check(&addr, None, service).await,
            Ok(ServingStatus::Serving as i32)
        );
        let other = pb::query_client::QueryClient::new(
            Bearer::new(&set.token("AGENCY_TX")).unwrap().channel(
                Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_lazy(),
            ),
        )
        .call_status(pb::CallStatusRequest {
            call_id: "tls-1".into(),
            jurisdiction: "US-TX".into(),
        })
        .await
        .expect_err("only health on the probe port");
        assert_eq!(other.code(), tonic::Code::Unimplemented, "{other:?}");
    }
}
