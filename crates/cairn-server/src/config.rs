//! The node's configuration: etcd's flag names, etcd's defaults where Cairn has no reason to
//! differ, and `CAIRN_*` environment variables as overrides for each flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use thiserror::Error;

/// etcd's default for `--max-request-bytes`: 1.5 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1536 * 1024;

#[derive(Args, Clone, Debug)]
pub struct ServeConfig {
    /// Human-readable name for this member.
    #[arg(long, env = "CAIRN_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory.
    #[arg(long, env = "CAIRN_DATA_DIR", default_value = "./cairn-data")]
    pub data_dir: PathBuf,

    /// Comma-separated URLs to listen on for client traffic (http only).
    #[arg(
        long,
        env = "CAIRN_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub listen_client_urls: String,

    /// Comma-separated client URLs to advertise to the rest of the cluster and to clients;
    /// defaults to the listen URLs.
    #[arg(long, env = "CAIRN_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,

    /// Largest client write request accepted, in bytes.
    #[arg(long, env = "CAIRN_MAX_REQUEST_BYTES", default_value_t = REQUEST_BYTES_MAX_DEFAULT)]
    pub max_request_bytes: usize,

    /// Most operations in one txn branch, or compares in one txn.
    #[arg(long, env = "CAIRN_MAX_TXN_OPS", default_value_t = cairn_kernel::validate::TXN_OPS_MAX_DEFAULT)]
    pub max_txn_ops: usize,

    /// Token that member IDs derive from, and, with the initial members, the cluster ID; every
    /// member of a cluster, including members added later, must be given the same token.
    #[arg(
        long,
        env = "CAIRN_INITIAL_CLUSTER_TOKEN",
        default_value = "cairn-cluster"
    )]
    pub initial_cluster_token: String,

    /// Comma-separated URLs to listen on for traffic from other members (http only).
    #[arg(
        long,
        env = "CAIRN_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,

    /// Comma-separated peer URLs other members reach this one at.
    #[arg(
        long,
        env = "CAIRN_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,

    /// The members of a new cluster, as `name=peer-url,...`; defaults to this member alone. A
    /// member joining with `--initial-cluster-state existing` asks the members named here which
    /// cluster it joins.
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// `new` to bootstrap a cluster from --initial-cluster, `existing` to join one that has
    /// already added this member. Ignored once the data directory holds a member's state.
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER_STATE", value_enum, default_value_t = ClusterState::New)]
    pub initial_cluster_state: ClusterState,

    /// Time between leader heartbeats, in milliseconds.
    #[arg(long, env = "CAIRN_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Milliseconds of silence from the leader after which followers replace it: a follower
    /// stands for election after 1 to 1.2 of them without hearing from the leader (members refuse
    /// to vote for another for 3/5 of one after they last heard from it), so a new leader is in
    /// place within about 1.2, and within two even after a split vote. A leader cut off from a
    /// majority for this long stops acting as leader.
    #[arg(long, env = "CAIRN_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// How often a watcher that asked for progress notifications and received nothing is told
    /// the revision it is up to date with (etcd's flag and default), e.g. `10m`, `500ms`.
    #[arg(
        long = "experimental-watch-progress-notify-interval",
        env = "CAIRN_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = humantime::parse_duration
    )]
    pub watch_progress_notify_interval: std::time::Duration,

    /// A directory of plugins to deploy and keep deployed: each `NAME.wasm` component, with its
    /// manifest in `NAME.toml` beside it, is deployed through the log when it appears or changes.
    #[arg(long, env = "CAIRN_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,

    /// Log entries applied between two snapshots.
    #[arg(long, env = "CAIRN_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Log entries kept behind a snapshot, so a slow follower can catch up without one.
    #[arg(long, env = "CAIRN_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 5_000)]
    pub snapshot_catchup_entries: u64,

    /// For tests of how a failing member stops, never for real: `panic:KEY` or `error:KEY` makes
    /// this member's state machine panic, or fail as on a storage error, when it applies a put
    /// of KEY.
    #[arg(long, env = "CAIRN_TEST_FAULT", hide = true, value_parser = cairn_raft::ApplyFault::parse)]
    pub test_fault: Option<cairn_raft::ApplyFault>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// `--initial-cluster` parsed: each member's name and peer URLs, in the order given.
pub fn parse_initial_cluster(spec: &str) -> Result<Vec<(String, Vec<String>)>, ClusterSpecError> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| ClusterSpecError(format!("{part:?} is not name=url")))?;
        listen_address(url).map_err(|e| ClusterSpecError(e.to_string()))?;
        match members.iter_mut().find(|(known, _)| known == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => members.push((name.to_string(), vec![url.to_string()])),
        }
    }
    if members.is_empty() {
        return Err(ClusterSpecError("no member given".into()));
    }
    Ok(members)
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("--initial-cluster: {0}")]
pub struct ClusterSpecError(String);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("no URL given")]
    Empty,
    #[error("{url:?}: only http:// URLs are supported")]
    Scheme { url: String },
    #[error("{url:?}: expected http://IP:PORT")]
    Address { url: String },
}

/// Splits a comma-separated URL list, keeping each URL as written.
pub fn split_urls(urls: &str) -> Result<Vec<String>, UrlError> {
    let urls: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(String::from)
        .collect();
    if urls.is_empty() {
        return Err(UrlError::Empty);
    }
    Ok(urls)
}

/// The socket address an `http://IP:PORT` URL names.
pub fn listen_address(url: &str) -> Result<SocketAddr, UrlError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| UrlError::Scheme {
            url: url.to_string(),
        })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let authority = if let Some(port) = authority.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        authority.to_string()
    };
    authority.parse().map_err(|_| UrlError::Address {
        url: url.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_like_etcds_flags() {
        assert_eq!(
            split_urls("http://127.0.0.1:2379, http://[::1]:2379").unwrap(),
            vec!["http://127.0.0.1:2379", "http://[::1]:2379"]
        );
        assert_eq!(split_urls(" , "), Err(UrlError::Empty));
        assert_eq!(
            listen_address("http://127.0.0.1:2379/").unwrap(),
            "127.0.0.1:2379".parse().unwrap()
        );
        assert_eq!(
            listen_address("http://localhost:23").unwrap(),
            "127.0.0.1:23".parse().unwrap()
        );
        assert!(matches!(
            listen_address("https://127.0.0.1:1"),
            Err(UrlError::Scheme { .. })
        ));
        assert!(matches!(
            listen_address("http://nowhere"),
            Err(UrlError::Address { .. })
        ));
    }

    #[test]
    fn initial_cluster_groups_urls_by_name() {
        assert_eq!(
            parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2,a=http://127.0.0.1:3")
                .unwrap(),
            vec![
                (
                    "a".to_string(),
                    vec![
                        "http://127.0.0.1:1".to_string(),
                        "http://127.0.0.1:3".to_string()
                    ]
                ),
                ("b".to_string(), vec!["http://127.0.0.1:2".to_string()]),
            ]
        );
        assert!(parse_initial_cluster("a").is_err());
        assert!(parse_initial_cluster("a=ftp://x").is_err());
        assert!(parse_initial_cluster("").is_err());
    }
}
