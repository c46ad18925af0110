//! Starting a member: open its state, start Raft, serve peers and clients until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_kernel::Limits;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_raft::{Bootstrap, Member, PeerIdentity, PeerService, RaftSettings, Replica};
use cairn_wasm::WasmRuntime;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::authority::RepairedConnection;
use crate::cluster::ClusterService;
use crate::config::{ClusterState, ServeConfig, listen_address, parse_initial_cluster, split_urls};
use crate::election::ElectionRecipe;
use crate::identity;
use crate::kv::KvService;
use crate::lease::LeaseService;
use crate::lessor::{Lessor, LessorPeerService};
use crate::lock::LockRecipe;
use crate::maintenance::MaintenanceService;
use crate::node::Node;
use crate::plugins::PluginsService;
use crate::watch::{WatchService, WatchSettings};

/// Room for a request's framing on top of `--max-request-bytes`, as etcd allows, so an oversized
/// write gets etcd's "request is too large" rather than a transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long shutdown waits for Raft to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts to publish this member's name and client URLs.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);

pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let client_urls = split_urls(&config.listen_client_urls).context("--listen-client-urls")?;
    let client_addresses = addresses(&client_urls).context("--listen-client-urls")?;
    let advertise_client_urls = match &config.advertise_client_urls {
        Some(urls) => split_urls(urls).context("--advertise-client-urls")?,
        None => client_urls.clone(),
    };
    let peer_urls = split_urls(&config.listen_peer_urls).context("--listen-peer-urls")?;
    let peer_addresses = addresses(&peer_urls).context("--listen-peer-urls")?;
    let advertise_peer_urls =
        split_urls(&config.initial_advertise_peer_urls).context("--initial-advertise-peer-urls")?;
    let token = config.initial_cluster_token.clone();
    let member_id = identity::member_id(&token, &advertise_peer_urls);
    let bootstrap = bootstrap(&config, &advertise_peer_urls, member_id)?;
    let initial_cluster_urls: Vec<String> = match &config.initial_cluster {
        Some(spec) => parse_initial_cluster(spec)?
            .into_iter()
            .flat_map(|(_, urls)| urls)
            .collect(),
        None => Vec::new(),
    };
    let limits = Limits {
        txn_ops_max: config.max_txn_ops,
    };
    let settings = RaftSettings {
        heartbeat_interval: Duration::from_millis(config.heartbeat_interval),
        election_timeout: Duration::from_millis(config.election_timeout),
        snapshot_count: config.snapshot_count,
        snapshot_catchup_entries: config.snapshot_catchup_entries,
        fault: config.test_fault.clone(),
    };
    if let Some(fault) = &config.test_fault {
        tracing::warn!(
            ?fault,
            "CAIRN_TEST_FAULT is set: this member will fail on purpose, for a test"
        );
    }
    if config.election_timeout < 5 * config.heartbeat_interval {
        anyhow::bail!("--election-timeout must be at least 5 times --heartbeat-interval");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let origin = identity::Origin {
        token: &token,
        bootstrap: &bootstrap,
        member_id,
        peer_urls: &advertise_peer_urls,
        initial_cluster_urls: &initial_cluster_urls,
    };
    let cluster_id = identity::cluster_id(&config.data_dir, origin)
        .await
        .context("settling which cluster this member belongs to")?;
    let plugin_runtime = WasmRuntime::new(Some(config.data_dir.join("plugin-cache")))
        .context("starting the plugin runtime")?;
    let replica = Replica::start(
        PeerIdentity {
            cluster_id,
            member_id,
            takes_unlabelled: identity::began_before_cluster_headers(&token, cluster_id),
        },
        &config.data_dir,
        limits,
        &settings,
        bootstrap,
        Arc::new(plugin_runtime),
    )
    .await
    .with_context(|| {
        format!(
            "starting from the data directory {}",
            config.data_dir.display()
        )
    })?;
    let node = Arc::new(Node {
        replica: replica.clone(),
        cluster_id,
        request_bytes_max: config.max_request_bytes,
        limits,
    });

    let lessor = Lessor::new(node.clone(), settings.election_timeout);
    let watch_settings = WatchSettings {
        progress_notify_interval: config.watch_progress_notify_interval,
        fragment_bytes: config.max_request_bytes,
    };

    let (stop, stopped) = watch::channel(false);
    let expiring = tokio::spawn(lessor.clone().run(stopped.clone()));
    let mut servers = tokio::task::JoinSet::new();
    for address in peer_addresses {
        let router = tonic::transport::Server::builder()
            .add_service(PeerService::server(replica.clone(), stopped.clone()))
            .add_service(LessorPeerService::server(lessor.clone()));
        let listener = bind(address).await?;
        // Peers are Cairn members, whose headers need no repair.
        servers.spawn(serve_on(
            router,
            listener,
            std::convert::identity,
            stopped.clone(),
            "peers",
        ));
        tracing::info!(%address, "serving peers");
    }
    let decoding_bytes_max = config.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES);
    for address in client_addresses {
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
                ClusterServer::new(ClusterService::new(node.clone(), token.clone()))
                    .max_decoding_message_size(decoding_bytes_max),
            )
            .add_service(
                LeaseServer::new(LeaseService::new(node.clone(), lessor.clone()))
                    .max_decoding_message_size(decoding_bytes_max),
            )
            .add_service(
                WatchServer::new(WatchService::new(node.clone(), watch_settings))
                    .max_decoding_message_size(decoding_bytes_max),
            )
            .add_service(PluginsService::server(node.clone()))
            .add_service(LockRecipe::etcd_server(node.clone()))
            .add_service(LockRecipe::cairn_server(node.clone()))
            .add_service(ElectionRecipe::server(node.clone()));
        let listener = bind(address).await?;
        servers.spawn(serve_on(
            router,
            listener,
            RepairedConnection::new,
            stopped.clone(),
            "clients",
        ));
        tracing::info!(%address, "serving clients");
    }
    // Not one of the servers: it ends once published, and that is no reason to stop.
    let publishing = tokio::spawn(publish(
        replica.clone(),
        config.name.clone(),
        advertise_client_urls,
        stopped.clone(),
    ));
    let bundling = tokio::spawn(crate::bundled::deploy_missing(
        node.clone(),
        stopped.clone(),
    ));
    let plugin_dir = config.plugin_dir.clone().map(|dir| {
        tokio::spawn(crate::plugin_dir::keep_deployed(
            node.clone(),
            dir,
            stopped.clone(),
        ))
    });
    tracing::info!(
        name = %config.name,
        member_id = format_args!("{member_id:x}"),
        cluster_id = format_args!("{:x}", node.cluster_id),
        "ready"
    );

    let failure = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            None
        }
        reason = replica.failure() => {
            tracing::error!(%reason, "Raft stopped; stopping this member");
            Some(reason)
        }
        Some(result) = servers.join_next() => {
            result.context("server task")??;
            None
        }
    };
    let _ = stop.send(true);
    if failure.is_some() {
        // What the kernel holds in memory may be half an entry ahead of what it committed, so
        // the listeners stop at once rather than drain. Connections already open run until the
        // process exits, moments later; a read on them may still see that memory.
        servers.abort_all();
    }
    while let Some(result) = servers.join_next().await {
        match result {
            Err(error) if error.is_cancelled() => {}
            result => result.context("server task")??,
        }
    }
    publishing.await.context("publishing task")?;
    expiring.await.context("lease expiry task")?;
    bundling.await.context("bundled plugin task")?;
    if let Some(plugin_dir) = plugin_dir {
        plugin_dir.await.context("plugin directory task")?;
    }
    drop(lessor);
    drop(node);
    // Raft's tasks own the log and the state machine; once they end, the kernel's and the log's
    // RocksDB close, before the process exits.
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, replica.shutdown()).await {
        Ok(()) => tracing::info!("stopped"),
        Err(_) => tracing::warn!("Raft did not stop within {SHUTDOWN_TIMEOUT:?}"),
    }
    match failure {
        None => Ok(()),
        Some(reason) => anyhow::bail!(
            "member {member_id:x} stopped because its Raft failed ({reason}); it restarts from \
             its data directory"
        ),
    }
}

fn addresses(urls: &[String]) -> Result<Vec<SocketAddr>, crate::config::UrlError> {
    urls.iter().map(|url| listen_address(url)).collect()
}

async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))
}

/// How this member starts: as one of the members `--initial-cluster` names, or joining (or
/// restarting after it joined) a cluster that has already added it.
fn bootstrap(
    config: &ServeConfig,
    advertise_peer_urls: &[String],
    member_id: u64,
) -> anyhow::Result<Bootstrap> {
    if config.initial_cluster_state == ClusterState::Existing {
        return Ok(Bootstrap::Existing);
    }
    let spec = config.initial_cluster.clone().unwrap_or_else(|| {
        advertise_peer_urls
            .iter()
            .map(|url| format!("{}={url}", config.name))
            .collect::<Vec<_>>()
            .join(",")
    });
    let members: std::collections::BTreeMap<u64, Member> = parse_initial_cluster(&spec)?
        .into_iter()
        .map(|(name, peer_urls)| {
            let id = identity::member_id(&config.initial_cluster_token, &peer_urls);
            let member = Member {
                name,
                peer_urls,
                client_urls: Vec::new(),
            };
            (id, member)
        })
        .collect();
    match members.get(&member_id) {
        // Initializing is skipped once Raft holds state, so restarts take this path too.
        Some(me) if me.name == config.name => Ok(Bootstrap::New(members)),
        // A member that joined after the cluster began restarts with the cluster's flags.
        _ if cairn_raft::holds_member(&config.data_dir) => Ok(Bootstrap::Existing),
        _ => anyhow::bail!(
            "--initial-cluster has no member named {:?} with peer URLs {}",
            config.name,
            advertise_peer_urls.join(",")
        ),
    }
}

/// Serves `router` on `listener` until `stopped`, each accepted connection wrapped by `wrap`.
async fn serve_on<C>(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    wrap: fn(tokio::net::TcpStream) -> C,
    mut stopped: watch::Receiver<bool>,
    whom: &'static str,
) -> anyhow::Result<()>
where
    C: tonic::transport::server::Connected
        + tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + Unpin
        + Send
        + 'static,
{
    let address = listener.local_addr().ok();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(wrap(stream))
    });
    router
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
        .with_context(|| format!("serving {whom} on {address:?}"))
}

/// Publishes this member's name and client URLs through the log once a leader is there to
/// take them, so every member's MemberList shows them.
async fn publish(
    replica: Replica,
    name: String,
    client_urls: Vec<String>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let published = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            published = replica.publish(name.clone(), client_urls.clone()) => published,
        };
        match published {
            Ok(()) => return,
            Err(error) => tracing::debug!(%error, "publishing this member's attributes; retrying"),
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(PUBLISH_RETRY) => {}
        }
    }
}
