//! Starting a node: open the kernel, start the applier, serve gRPC until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use cairn_kernel::{Kernel, Limits};
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use tokio::sync::{RwLock, watch};

use tokio_stream::StreamExt;

use crate::applier::Applier;
use crate::authority::RepairedConnection;
use crate::config::{ServeConfig, listen_address, split_urls};
use crate::identity::Identity;
use crate::kv::KvService;
use crate::maintenance::{ClusterService, MaintenanceService};
use crate::node::Node;

/// Room for a request's framing on top of `--max-request-bytes`, as etcd allows, so an oversized
/// write gets etcd's "request is too large" rather than a transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long shutdown waits for queued writes to be applied and the store to close.
const SHUTDOWN_APPLIER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listen_urls = split_urls(&config.listen_client_urls).context("--listen-client-urls")?;
    let addresses: Vec<SocketAddr> = listen_urls
        .iter()
        .map(|url| listen_address(url))
        .collect::<Result<_, _>>()
        .context("--listen-client-urls")?;
    let advertise_urls = match &config.advertise_client_urls {
        Some(urls) => split_urls(urls).context("--advertise-client-urls")?,
        None => listen_urls.clone(),
    };
    let limits = Limits {
        txn_ops_max: config.max_txn_ops,
    };
    let kernel = Kernel::open(&config.data_dir, limits)
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let kernel = Arc::new(RwLock::new(kernel));
    let (applier, applier_thread) =
        Applier::spawn(kernel.clone()).context("starting the applier thread")?;
    let node = Arc::new(Node {
        applier,
        kernel,
        identity: Identity::single_member(
            &config.initial_cluster_token,
            &config.name,
            advertise_urls,
        ),
        request_bytes_max: config.max_request_bytes,
        limits,
    });

    let decoding_bytes_max = config.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES);
    let (stop, stopped) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for address in addresses {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        let router = tonic::transport::Server::builder()
            .add_service(
                KvServer::new(KvService::new(node.clone()))
                    .max_decoding_message_size(decoding_bytes_max),
            )
            .add_service(
                MaintenanceServer::new(MaintenanceService::new(node.clone()))
                    .max_decoding_message_size(decoding_bytes_max),
            )
            .add_service(
                ClusterServer::new(ClusterService::new(node.clone()))
                    .max_decoding_message_size(decoding_bytes_max),
            );
        let mut stopped = stopped.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
            let stream = accepted?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(RepairedConnection::new(stream))
        });
        servers.spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
                .with_context(|| format!("serving clients on {address}"))
        });
        tracing::info!(%address, "serving client requests");
    }
    tracing::info!(
        name = %node.identity.name,
        member_id = format_args!("{:x}", node.identity.member_id),
        cluster_id = format_args!("{:x}", node.identity.cluster_id),
        "ready"
    );

    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        Some(result) = servers.join_next() => {
            result.context("client server task")??;
        }
    }
    let _ = stop.send(true);
    while let Some(result) = servers.join_next().await {
        result.context("client server task")??;
    }
    // The servers are gone with their handles on the node; dropping the last one closes the
    // applier's queue, and the applier, the kernel's last owner, closes RocksDB as it ends.
    drop(node);
    let joined = tokio::task::spawn_blocking(move || applier_thread.join());
    match tokio::time::timeout(SHUTDOWN_APPLIER_TIMEOUT, joined).await {
        Ok(_) => tracing::info!("stopped"),
        Err(_) => tracing::warn!("the applier did not stop within {SHUTDOWN_APPLIER_TIMEOUT:?}"),
    }
    Ok(())
}
