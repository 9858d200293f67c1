//! `callvault serve`: run a node's roles until SIGTERM or Ctrl-C, then stop cleanly.

use std::sync::Arc;

use anyhow::Context;
use callvault_meta::MetaNode;
use callvault_proto::FILE_DESCRIPTOR_SET;
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::config::{NodeConfig, Role};

/// Runs the node described by `config` until a shutdown signal.
pub async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let local = listener.local_addr()?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection service")?;

    let mut router = Server::builder()
        .add_service(health_service)
        .add_service(reflection);

    let mut meta: Option<Arc<MetaNode>> = None;
    if config.roles.contains(&Role::Meta) {
        let node = MetaNode::start(config.meta_config())
            .await
            .context("cannot start the metadata store")?;
        let audit = callvault_meta::audit_service::AuditService::new(
            node.state_machine.clone(),
            config.audit.identity()?,
        );
        router = router
            .add_service(node.service.raft_server())
            .add_service(node.service.meta_store_server())
            .add_service(node.service.cluster_server())
            .add_service(audit.server());
        health_reporter
            .set_serving::<callvault_proto::v1::meta_store_server::MetaStoreServer<
                callvault_meta::service::MetaService,
            >>()
            .await;
        meta = Some(node);
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
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
        shard_task = Some(tokio::spawn(async move {
            let result = callvault_blob::serve_shard_on(shard_config, listener, shutdown).await;
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
    if let Some(task) = shard_task {
        task.await
            .context("blob shard task")?
            .context("blob shard")?;
    }
    served?;

    if let Some(node) = meta {
        tracing::info!("stopping the metadata store");
        node.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn tokio_stream_from(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}

/// Resolves on SIGTERM (Kubernetes, systemd) or Ctrl-C.
async fn shutdown_signal() {
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
