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
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;

use crate::api::ApiService;
use crate::auth::{AccessRole, Authenticator};
use crate::config::{NodeConfig, Role};
use crate::content::ContentService;
use crate::ingest::{IngestLimits, IngestService};
use crate::lifecycle::Lifecycle;
use callvault_meta::command::AccessQuota;

/// The gRPC health service name that is SERVING once this node's blob shard has opened its store.
pub const BLOB_READINESS_SERVICE: &str = "callvault.v1.BlobShard";

/// Runs the node described by `config` until a shutdown signal, or until its Raft member fails
/// (then it returns the failure, so the process exits non-zero and its supervisor restarts it).
pub async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    // First, before any channel or listener exists: every one of them follows this choice.
    install_transport_security(&config)?;
    let listeners = Listeners::bind(&config).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let (auth, auth_failures) = authenticator(&config)?;
    // Every store opens before the Raft member starts: a node that cannot serve must not
    // half-start a member (its exit could cut a snapshot install short).
    let shard = open_shard(&config, &health).await?;

    let mut routes = RoutesBuilder::default();
    routes
        .add_service(health_service.clone())
        .add_service(reflection()?);
    let meta = start_meta(&config, &auth, &health, &mut routes).await?;
    if config.roles.contains(&Role::Ingest) {
        add_ingest(&config, &auth, &health, &mut routes).await?;
    }
    if config.roles.contains(&Role::Api) {
        add_api(&config, &auth, &health, &mut routes).await?;
    }

    let (stop, stopped) = watch::channel(false);
    let background =
        Background::spawn(&config, meta.as_ref(), shard, auth_failures, &health, &stop)?;
    tracing::info!(
        node_id = config.node_id,
        listen = %listeners.local,
        advertise = %config.advertise(),
        roles = ?config.roles,
        data_dir = %config.data_dir.display(),
        "callvault node serving"
    );
    // Machine-readable line for scripts and tests that start nodes on port 0.
    println!(
        "callvault node {} listening on {}",
        config.node_id, listeners.local
    );
    let health_task = match listeners.health {
        Some(listener) => Some(serve_health(&config, listener, health_service, &stopped)?),
        None => None,
    };

    let served = grpc_server()?
        .layer(callvault_proto::identity::InternalGateLayer::new(
            config.peer_table()?,
        ))
        // A span per request, a child of the trace context the caller sent (when tracing is on).
        .trace_fn(callvault_proto::trace_context::server_span)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(
            tokio_stream_from(listeners.main),
            stop_on_signal(stop, stopped),
        )
        .await
        .context("gRPC server");
    let finished = background.join(served, health_task).await;
    if let Some(node) = meta {
        tracing::info!("stopping the metadata store");
        node.shutdown().await;
    }
    finished?;
    tracing::info!("stopped");
    Ok(())
}

fn install_transport_security(config: &NodeConfig) -> anyhow::Result<()> {
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
    Ok(())
}

/// The node's listeners, bound before anything runs so a taken port fails the start at once.
struct Listeners {
    main: TcpListener,
    local: std::net::SocketAddr,
    health: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &NodeConfig) -> anyhow::Result<Self> {
        let main = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        let health = match config.tls.health_listen_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("tls.health_listen_addr cannot listen on {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            local: main.local_addr()?,
            main,
            health,
        })
    }
}

fn reflection() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection service")
}

/// The public APIs' authenticator, and the log its failed authentications are counted in (they
/// are reported to the audit log once per window).
fn authenticator(
    config: &NodeConfig,
) -> anyhow::Result<(Authenticator, crate::auth_failures::AuthFailureLog)> {
    let auth = match &config.auth.principals_file {
        Some(file) => Authenticator::load(file)?,
        None => Authenticator::default(),
    };
    let failures = crate::auth_failures::AuthFailureLog::new(crate::ingest::now());
    let auth = auth.with_failure_log(failures.clone());
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
    Ok((auth, failures))
}

fn grpc_server() -> anyhow::Result<Server> {
    let mut server = Server::builder();
    if let Some(tls) = callvault_proto::tls::server_config() {
        server = server.tls_config(tls).context("[tls]")?;
    }
    Ok(server)
}

/// The blob shard's store, open, and its listener; `None` without the blob role.
async fn open_shard(
    config: &NodeConfig,
    health: &HealthReporter,
) -> anyhow::Result<Option<(callvault_blob::Shard, TcpListener)>> {
    if !config.roles.contains(&Role::Blob) {
        return Ok(None);
    }
    let shard_config = config.shard_config()?;
    let addr = shard_config.listen_addr;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("blob shard cannot listen on {addr}"))?;
    let shard_id = shard_config.shard_id.clone();
    let shard = tokio::task::spawn_blocking(move || callvault_blob::Shard::open(shard_config))
        .await
        .context("opening the blob shard")?
        .context("blob shard")?;
    // Readiness of a blob pod: its store is open.
    health
        .set_service_status(BLOB_READINESS_SERVICE, ServingStatus::Serving)
        .await;
    println!(
        "callvault node {} blob shard {shard_id} listening on {}",
        config.node_id,
        listener.local_addr()?
    );
    Ok(Some((shard, listener)))
}

/// Starts the Raft member and adds its services; `None` without the meta role.
async fn start_meta(
    config: &NodeConfig,
    auth: &Authenticator,
    health: &HealthReporter,
    routes: &mut RoutesBuilder,
) -> anyhow::Result<Option<Arc<MetaNode>>> {
    if !config.roles.contains(&Role::Meta) {
        return Ok(None);
    }
    let node = MetaNode::start(config.meta_config()?)
        .await
        .context("cannot start the metadata store")?;
    let audit = callvault_meta::audit_service::AuditService::new(
        node.state_machine.clone(),
        config.audit.identity()?,
    );
    routes
        .add_service(node.service.raft_server())
        .add_service(node.service.meta_store_server())
        .add_service(InterceptedService::new(
            node.service.cluster_server(),
            // Members call each other's Cluster service too (forwarding, joining).
            auth.requiring_or_peer(&[AccessRole::Operator]),
        ))
        .add_service(InterceptedService::new(audit.server(), auth.audit_gate()));
    // SERVING once this node is a caught-up voter (see `bootstrap::readiness`).
    health
        .set_service_status(
            crate::bootstrap::READINESS_SERVICE,
            ServingStatus::NotServing,
        )
        .await;
    Ok(Some(node))
}

async fn add_ingest(
    config: &NodeConfig,
    auth: &Authenticator,
    health: &HealthReporter,
    routes: &mut RoutesBuilder,
) -> anyhow::Result<()> {
    let peer = config.credential(IdentityRole::Ingest)?;
    let meta_client = meta_client(config, &peer)?;
    let replication = callvault_blob::ReplicationConfig {
        replicas: config.blob.replicas.unwrap_or(3),
        write_quorum: config.ingest.write_quorum,
        peer,
        ..Default::default()
    };
    let blobs = callvault_blob::ReplicatedBlobClient::new(config.blob.shards.clone(), &replication)
        .map_err(|e| anyhow::anyhow!("blob shard set: {e}"))?;
    let i = &config.ingest;
    let ingest = IngestService::new(
        meta_client,
        blobs,
        config.key_ring()?,
        config.index_key()?,
        IngestLimits {
            max_call_seconds: i.max_call_seconds,
            max_call_bytes: i.max_call_bytes,
            max_concurrent_calls: i.max_concurrent_calls,
            max_buffered_bytes: i.max_buffered_bytes,
            chunk_writes_in_flight: i.chunk_writes_in_flight,
            block_bytes: i.block_bytes,
        },
    );
    routes.add_service(InterceptedService::new(ingest.server(), auth.clone()));
    health
        .set_serving::<pb::ingest_server::IngestServer<IngestService>>()
        .await;
    Ok(())
}

async fn add_api(
    config: &NodeConfig,
    auth: &Authenticator,
    health: &HealthReporter,
    routes: &mut RoutesBuilder,
) -> anyhow::Result<()> {
    let peer = config.credential(IdentityRole::Api)?;
    let meta_client = meta_client(config, &peer)?;
    let api = ApiService::new(meta_client.clone(), config.index_key()?);
    let p = &config.playback;
    let content = ContentService::new(
        meta_client,
        blob_reader(config, &peer)?,
        config.key_ring()?,
        AccessQuota {
            calls_per_hour: p.calls_per_hour,
            bytes_per_hour: p.bytes_per_hour,
        },
    );
    routes
        .add_service(InterceptedService::new(api.query_server(), auth.clone()))
        .add_service(InterceptedService::new(api.admin_server(), auth.clone()))
        .add_service(InterceptedService::new(content.server(), auth.clone()));
    health
        .set_serving::<pb::query_server::QueryServer<ApiService>>()
        .await;
    Ok(())
}

/// Everything that runs beside the gRPC server and stops with it.
struct Background {
    lifecycle: Vec<JoinHandle<()>>,
    auth_failure_reporter: Option<JoinHandle<()>>,
    bootstrap: Option<JoinHandle<anyhow::Result<()>>>,
    shard: Option<JoinHandle<Result<(), callvault_blob::ServeError>>>,
    raft_watch: Option<JoinHandle<()>>,
    /// Set (before the node is stopped) when the Raft member failed on its own.
    raft_failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl Background {
    fn spawn(
        config: &NodeConfig,
        meta: Option<&Arc<MetaNode>>,
        shard: Option<(callvault_blob::Shard, TcpListener)>,
        auth_failures: crate::auth_failures::AuthFailureLog,
        health: &HealthReporter,
        stop: &watch::Sender<bool>,
    ) -> anyhow::Result<Self> {
        let stopped = stop.subscribe();
        let mut background = Self {
            lifecycle: Vec::new(),
            auth_failure_reporter: auth_failure_reporter(config, auth_failures, &stopped)?,
            bootstrap: None,
            shard: shard.map(|(shard, listener)| serve_shard(shard, listener, stop)),
            raft_watch: None,
            raft_failure: Arc::default(),
        };
        let Some(node) = meta else {
            return Ok(background);
        };
        let peer = config.credential(IdentityRole::Meta)?;
        // Every meta node attests its clock and reports the voters': the cluster time must move
        // whether or not this node runs the lifecycle workers (reads check deadlines with it).
        let l = &config.lifecycle;
        let attester = crate::clock::ClockAttester::new(
            node.clone(),
            config.node_id,
            meta_client(config, &peer)?,
            std::time::Duration::from_millis(l.clock_attest_ms),
            std::time::Duration::from_millis(l.max_clock_skew_ms),
        );
        background
            .lifecycle
            .push(tokio::spawn(attester.run(stopped.clone())));
        if config.lifecycle.enabled {
            let blobs = if config.blob.shards.is_empty() {
                None
            } else {
                Some(blob_reader(config, &peer)?)
            };
            background.lifecycle.extend(
                Lifecycle::new(
                    node.clone(),
                    config.node_id,
                    meta_client(config, &peer)?,
                    blobs,
                    config.lifecycle.clone(),
                )
                .spawn(stopped.clone()),
            );
        }
        tokio::spawn(crate::bootstrap::readiness(
            node.clone(),
            config.node_id,
            health.clone(),
            stopped.clone(),
        ));
        if config.bootstrap.mode == crate::config::BootstrapMode::Auto {
            let plan = crate::bootstrap::BootstrapPlan::from_config(config)?;
            let (node, stop) = (node.clone(), stop.clone());
            background.bootstrap = Some(tokio::spawn(async move {
                let result = crate::bootstrap::run(node, plan, stop.subscribe()).await;
                // A node that cannot join exits non-zero, so its supervisor shows and retries it.
                if result.is_err() {
                    let _ = stop.send(true);
                }
                result
            }));
        }
        let (node, stop, failure) = (node.clone(), stop.clone(), background.raft_failure.clone());
        background.raft_watch = Some(tokio::spawn(async move {
            let fatal = node.failed().await;
            tracing::error!(error = %fatal, "the Raft member stopped on an error: stopping the node");
            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(fatal.to_string());
            let _ = stop.send(true);
        }));
        Ok(background)
    }

    /// Waits for every task once the server has stopped; the first failure is the node's.
    async fn join(
        self,
        served: anyhow::Result<()>,
        health_task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    ) -> anyhow::Result<()> {
        if let Some(watch) = self.raft_watch {
            watch.abort();
        }
        let mut outcome = served;
        if let Some(fatal) = self
            .raft_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            outcome = outcome.and(Err(anyhow::anyhow!("the Raft member failed: {fatal}")));
        }
        if let Some(task) = self.bootstrap {
            outcome = outcome.and(task.await.context("bootstrap task")?);
        }
        if let Some(task) = self.shard {
            outcome = outcome.and(task.await.context("blob shard task")?.context("blob shard"));
        }
        if let Some(task) = health_task {
            outcome = outcome.and(
                task.await
                    .context("health listener task")?
                    .context("health listener"),
            );
        }
        if let Some(reporter) = self.auth_failure_reporter {
            let _ = reporter.await;
        }
        for task in self.lifecycle {
            let _ = task.await;
        }
        outcome
    }
}

fn auth_failure_reporter(
    config: &NodeConfig,
    failures: crate::auth_failures::AuthFailureLog,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let reporter = reporter_credential(config)?;
    let window = config.audit.auth_failure_window()?;
    match MetaClient::new(&config.meta_addrs(), &reporter) {
        Ok(meta_client) => Ok(Some(crate::auth_failures::spawn_reporter(
            failures,
            meta_client,
            config.node_id,
            window,
            stopped.clone(),
        ))),
        Err(e) => {
            tracing::warn!("failed authentications are not reported to the audit log: {e}");
            Ok(None)
        }
    }
}

fn serve_shard(
    shard: callvault_blob::Shard,
    listener: TcpListener,
    stop: &watch::Sender<bool>,
) -> JoinHandle<Result<(), callvault_blob::ServeError>> {
    let stop = stop.clone();
    tokio::spawn(async move {
        let result = shard.serve(listener, wait_stop(stop.subscribe())).await;
        // A shard that cannot run takes the node down rather than leave it half-serving.
        let _ = stop.send(true);
        result
    })
}

fn serve_health(
    config: &NodeConfig,
    listener: TcpListener,
    health_service: HealthServer<impl tonic_health::pb::health_server::Health>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    println!(
        "callvault node {} health listening on {}",
        config.node_id,
        listener.local_addr()?
    );
    Ok(tokio::spawn(
        Server::builder()
            .add_service(health_service)
            .serve_with_incoming_shutdown(tokio_stream_from(listener), wait_stop(stopped.clone())),
    ))
}

async fn wait_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Resolves on a shutdown signal or when a part of the node stopped it, stopping the rest.
async fn stop_on_signal(stop: watch::Sender<bool>, stopped: watch::Receiver<bool>) {
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = wait_stop(stopped) => {}
    }
    let _ = stop.send(true);
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
