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

    /// Token that tells clusters apart; member and cluster IDs derive from it.
    #[arg(
        long,
        env = "CAIRN_INITIAL_CLUSTER_TOKEN",
        default_value = "cairn-cluster"
    )]
    pub initial_cluster_token: String,
}

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
}
