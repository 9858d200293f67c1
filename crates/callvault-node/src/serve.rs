//! `callvault serve`: run a node's roles until SIGTERM or Ctrl-C, then stop cleanly.

use std::sync::Arc;

use anyhow::Context;
use callvault_meta::MetaNode;
use callvault_proto::FILE_DESCRIPTOR_SET;
use tokio::net::TcpListener;
use tonic::transport::Server;

use callvault_meta::client::MetaClient;
use callvault_proto::identity::{Credential, Role as IdentityRole};
use callvault_proto::v1 as pb;
use tonic::service::interceptor::InterceptedService;

use crate::api::ApiService;
use crate::auth::{AccessRole, Authenticator};
use crate::config::{NodeConfig, Role};
use crate::content::ContentService;
use crate::ingest::{IngestLimits, IngestService};
use crate::lifecycle::Lifecycle;
use callvault_meta::command::AccessQuota;

/// The gRPC health service name that is SERVING once this node's blob shard has opened its store.
pub const BLOB_READINESS_SERVICE: &str = "callvault.v1.BlobShard";

/// Runs the node described by `config` until a shutdown signal.
pub async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    // First, before any channel or listener exists: every one of them follows this choice.
    match config.transport_security()? {
        Some(security) => {
            callvault_proto::tls::install(security)?;
            tracing::info!("TLS on every listener and channel");
        }
        None => tracing::warn!(
            "tls is not configured: gRPC, raft and blob traffic is plaintext; \
             run it only on a network no one else can reach"
        ),
    }
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let local = listener.local_addr()?;
    // Bound now, like the main port, so a taken port fails the start before anything runs.
    let health_listener = match config.tls.health_listen_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("tls.health_listen_addr cannot listen on {addr}"))?,
        ),
        None => None,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection service")?;

    // Internal RPCs admit only the roles the table names (`callvault_proto::identity`).
    let gate = callvault_proto::identity::InternalGateLayer::new(config.peer_table()?);
    let auth = match &config.auth.principals_file {
        Some(file) => Authenticator::load(file)?,
        None => Authenticator::default(),
    };
    // Failed authentications are counted here and reported to the audit log once per window.
    let auth_failures = crate::auth_failures::AuthFailureLog::new(crate::ingest::now());
    let auth = auth.with_failure_log(auth_failures.clone());
    if auth.is_empty() {
        tracing::warn!(
            "no principals configured (auth.principals_file): public APIs refuse every request"
        );
    } else {
        tracing::info!(
            principals = auth.len(),
            "public APIs authenticate bearer tokens"
        );
    }

    let mut server = Server::builder();
    if let Some(tls) = callvault_proto::tls::server_config() {
        server = server.tls_config(tls).context("[tls]")?;
    }
    let mut router = server
        .layer(gate)
        // A span per request, a child of the trace context the caller sent (when tracing is on).
        .trace_fn(callvault_proto::trace_context::server_span)
        .add_service(health_service.clone())
        .add_service(reflection);

    let mut meta: Option<Arc<MetaNode>> = None;
    if config.roles.contains(&Role::Meta) {
        let node = MetaNode::start(config.meta_config()?)
            .await
            .context("cannot start the metadata store")?;
        let audit = callvault_meta::audit_service::AuditService::new(
            node.state_machine.clone(),
            config.audit.identity()?,
        );
        router = router
            .add_service(node.service.raft_server())
            .add_service(node.service.meta_store_server())
            .add_service(InterceptedService::new(
                node.service.cluster_server(),
                // Members call each other's Cluster service too (forwarding, joining).
                auth.requiring_or_peer(&[AccessRole::Operator]),
            ))
            .add_service(InterceptedService::new(audit.server(), auth.audit_gate()));
        // SERVING once this node is a caught-up voter (see `bootstrap::readiness`).
        health_reporter
            .set_service_status(
                crate::bootstrap::READINESS_SERVICE,
                tonic_health::ServingStatus::NotServing,
            )
            .await;
        meta = Some(node);
    }

    let stateless = config.roles.contains(&Role::Ingest) || config.roles.contains(&Role::Api);
    if stateless {
        let index_key = config.index_key()?;
        if config.roles.contains(&Role::Ingest) {
            let peer = config.credential(IdentityRole::Ingest)?;
            let meta_client = meta_client(&config, &peer)?;
            let replication = callvault_blob::ReplicationConfig {
                replicas: config.blob.replicas.unwrap_or(3),
                write_quorum: config.ingest.write_quorum,
                peer,
                ..Default::default()
            };
            let blobs =
                callvault_blob::ReplicatedBlobClient::new(config.blob.shards.clone(), &replication)
                    .map_err(|e| anyhow::anyhow!("blob shard set: {e}"))?;
            let i = &config.ingest;
            let ingest = IngestService::new(
                meta_client,
                blobs,
                config.key_ring()?,
                index_key,
                IngestLimits {
                    max_call_seconds: i.max_call_seconds,
                    max_call_bytes: i.max_call_bytes,
                    max_concurrent_calls: i.max_concurrent_calls,
                    max_buffered_bytes: i.max_buffered_bytes,
                    chunk_writes_in_flight: i.chunk_writes_in_flight,
                    block_bytes: i.block_bytes,
                },
            );
            router = router.add_service(InterceptedService::new(ingest.server(), auth.clone()));
            health_reporter
                .set_serving::<pb::ingest_server::IngestServer<IngestService>>()
                .await;
        }
        if config.roles.contains(&Role::Api) {
            let peer = config.credential(IdentityRole::Api)?;
            let meta_client = meta_client(&config, &peer)?;
            let api = ApiService::new(meta_client.clone(), index_key);
            let p = &config.playback;
            let content = ContentService::new(
                meta_client,
                blob_reader(&config, &peer)?,
                config.key_ring()?,
                AccessQuota {
                    calls_per_hour: p.calls_per_hour,
                    bytes_per_hour: p.bytes_per_hour,
                },
            );
            router = router
                .add_service(InterceptedService::new(api.query_server(), auth.clone()))
                .add_service(InterceptedService::new(api.admin_server(), auth.clone()))
                .add_service(InterceptedService::new(content.server(), auth.clone()));
            health_reporter
                .set_serving::<pb::query_server::QueryServer<ApiService>>()
                .await;
        }
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut lifecycle_tasks = Vec::new();
    if let Some(node) = &meta {
        // Every meta node attests its clock and reports the voters': the cluster time must move
        // whether or not this node runs the lifecycle workers.
        let peer = config.credential(IdentityRole::Meta)?;
        let l = &config.lifecycle;
        let attester = crate::clock::ClockAttester::new(
            node.clone(),
            config.node_id,
            meta_client(&config, &peer)?,
            std::time::Duration::from_millis(l.clock_attest_ms),
            std::time::Duration::from_millis(l.max_clock_skew_ms),
        );
        lifecycle_tasks.push(tokio::spawn(attester.run(stopped.clone())));
    }
    if let Some(node) = &meta
        && config.lifecycle.enabled
    {
        let peer = config.credential(IdentityRole::Meta)?;
        let client = meta_client(&config, &peer)?;
        let blobs = if config.blob.shards.is_empty() {
            None
        } else {
            Some(blob_reader(&config, &peer)?)
        };
        lifecycle_tasks.extend(
            Lifecycle::new(
                node.clone(),
                config.node_id,
                client,
                blobs,
                config.lifecycle.clone(),
            )
            .spawn(stopped.clone()),
        );
    }
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let reporter = reporter_credential(&config)?;
    let auth_failure_reporter = match MetaClient::new(&config.meta_addrs(), &reporter) {
        Ok(meta_client) => Some(crate::auth_failures::spawn_reporter(
            auth_failures,
            meta_client,
            config.node_id,
            config.audit.auth_failure_window()?,
            stopped.clone(),
        )),
        Err(e) => {
            tracing::warn!("failed authentications are not reported to the audit log: {e}");
            None
        }
    };
    let mut bootstrap_task = None;
    if let Some(node) = &meta {
        tokio::spawn(crate::bootstrap::readiness(
            node.clone(),
            config.node_id,
            health_reporter.clone(),
            stopped.clone(),
        ));
        if config.bootstrap.mode == crate::config::BootstrapMode::Auto {
            let plan = crate::bootstrap::BootstrapPlan::from_config(&config)?;
            let (node, stopped, stop_node) = (node.clone(), stopped.clone(), stop.clone());
            bootstrap_task = Some(tokio::spawn(async move {
                let result = crate::bootstrap::run(node, plan, stopped).await;
                // A node that cannot join exits non-zero, so its supervisor shows and retries it.
                if result.is_err() {
                    let _ = stop_node.send(true);
                }
                result
            }));
        }
    }
    let mut shard_task = None;
    if config.roles.contains(&Role::Blob) {
        let shard_config = config.shard_config()?;
        let addr = shard_config.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("blob shard cannot listen on {addr}"))?;
        println!(
            "callvault node {} blob shard {} listening on {}",
            config.node_id,
            shard_config.shard_id,
            listener.local_addr()?
        );
        let shutdown = wait_stop(stopped.clone());
        let stop_node = stop.clone();
        let health = health_reporter.clone();
        shard_task = Some(tokio::spawn(async move {
            let result = async {
                let shard =
                    tokio::task::spawn_blocking(move || callvault_blob::Shard::open(shard_config))
                        .await
                        .map_err(|e| {
                            callvault_blob::ServeError::Config(format!("opening the shard: {e}"))
                        })??;
                // Readiness of a blob pod: its store is open.
                health
                    .set_service_status(
                        BLOB_READINESS_SERVICE,
                        tonic_health::ServingStatus::Serving,
                    )
                    .await;
                shard.serve(listener, shutdown).await
            }
            .await;
            // A shard that cannot run takes the node down rather than leave it half-serving.
            let _ = stop_node.send(true);
            result
        }));
    }

    tracing::info!(
        node_id = config.node_id,
        listen = %local,
        advertise = %config.advertise(),
        roles = ?config.roles,
        data_dir = %config.data_dir.display(),
        "callvault node serving"
    );
    // Machine-readable line for scripts and tests that start nodes on port 0.
    println!("callvault node {} listening on {local}", config.node_id);

    let health_task = match health_listener {
        Some(listener) => {
            println!(
                "callvault node {} health listening on {}",
                config.node_id,
                listener.local_addr()?
            );
            let shutdown = wait_stop(stopped.clone());
            Some(tokio::spawn(
                Server::builder()
                    .add_service(health_service)
                    .serve_with_incoming_shutdown(tokio_stream_from(listener), shutdown),
            ))
        }
        None => None,
    };

    let incoming = tokio_stream_from(listener);
    let mut node_stopping = stopped.clone();
    let signal = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = node_stopping.wait_for(|s| *s) => {}
        }
        let _ = stop.send(true);
    };
    let served = router
        .serve_with_incoming_shutdown(incoming, signal)
        .await
        .context("gRPC server");
    if let Some(task) = bootstrap_task {
        task.await.context("bootstrap task")??;
    }
    if let Some(task) = shard_task {
        task.await
            .context("blob shard task")?
            .context("blob shard")?;
    }
    served?;
    if let Some(task) = health_task {
        task.await
            .context("health listener task")?
            .context("health listener")?;
    }
    if let Some(reporter) = auth_failure_reporter {
        let _ = reporter.await;
    }

    for task in lifecycle_tasks {
        let _ = task.await;
    }
    if let Some(node) = meta {
        tracing::info!("stopping the metadata store");
        node.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// A client of the metadata store acting as `peer`'s role.
fn meta_client(config: &NodeConfig, peer: &Credential) -> anyhow::Result<MetaClient> {
    MetaClient::new(&config.meta_addrs(), peer)
        .map_err(|e| anyhow::anyhow!("cluster.meta_addrs: {e}"))
}

/// The role this node's failed-login reports are proposed as: any of its roles may.
fn reporter_credential(config: &NodeConfig) -> anyhow::Result<Credential> {
    let role = config
        .roles
        .first()
        .map(|r| r.identity())
        .context("a node has at least one role")?;
    config.credential(role)
}

/// A client of the configured blob shard set, for reads (api) and collection (meta). Neither
/// writes chunks, so reads do not repair replicas: the shards' scrubbers do.
fn blob_reader(
    config: &NodeConfig,
    peer: &Credential,
) -> anyhow::Result<callvault_blob::ReplicatedBlobClient> {
    let replication = callvault_blob::ReplicationConfig {
        replicas: config.blob.replicas.unwrap_or(3),
        write_quorum: config.ingest.write_quorum,
        peer: peer.clone(),
        read_repair: false,
        ..Default::default()
    };
    callvault_blob::ReplicatedBlobClient::new(config.blob.shards.clone(), &replication)
        .map_err(|e| anyhow::anyhow!("blob shard set: {e}"))
}

fn tokio_stream_from(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}

/// Resolves on SIGTERM (Kubernetes, systemd) or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
