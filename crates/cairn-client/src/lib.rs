//! Typed clients for Cairn's bundled recipes, over its gRPC API.
//!
//! - [`Session`]: a lease kept alive in the background, which locks, leaderships and service
//!   registrations are held under; when the process dies, they end with the lease's TTL.
//! - [`lock`]: fair FIFO locks; a [`lock::LockGuard`] carries its fencing token.
//! - [`election`]: campaign, proclaim, observe and resign (etcd's v3election).
//! - [`discovery`]: service instances registered under a lease that keeps itself alive, listed
//!   with filters and watched as a stream.
//! - [`queue`]: durable queues with at-least-once delivery and a [`queue::Consumer`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_client::Error> {
//! let client = cairn_client::Client::connect("http://127.0.0.1:2379").await?;
//! let session = client.session(10).await?;
//! let guard = client.lock("backups", &session).await?;
//! println!("holding {} with token {}", guard.key(), guard.fencing_token());
//! guard.release().await?;
//! # Ok(()) }
//! ```

pub mod discovery;
pub mod election;
mod error;
pub mod lock;
mod plugin_call;
pub mod queue;
mod session;

use std::time::Duration;

use tonic::transport::Channel;

pub use error::Error;
pub use session::Session;

/// How long connecting waits for each endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a Cairn cluster. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to the first of the comma-separated `endpoints` that answers (`host:port` or a
    /// URL; `http://` is assumed).
    pub async fn connect(endpoints: &str) -> Result<Client, Error> {
        let mut last_error = None;
        for endpoint in endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let url = if endpoint.contains("://") {
                endpoint.to_string()
            } else {
                format!("http://{endpoint}")
            };
            let connected = Channel::from_shared(url.clone())
                .map_err(|error| Error::Endpoint(format!("{url}: {error}")))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .connect()
                .await;
            match connected {
                Ok(channel) => return Ok(Client { channel }),
                Err(error) => last_error = Some(format!("{url}: {error}")),
            }
        }
        Err(Error::Endpoint(
            last_error.unwrap_or_else(|| "no endpoint given".to_string()),
        ))
    }

    /// A client over an existing connection.
    pub fn from_channel(channel: Channel) -> Client {
        Client { channel }
    }

    /// The underlying connection, for etcd's own services (KV, Watch, Lease...).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Grants a lease of `ttl` seconds and keeps it alive until the session is closed or
    /// dropped.
    pub async fn session(&self, ttl: i64) -> Result<Session, Error> {
        Session::start(self.channel.clone(), ttl).await
    }
}

/// The Txn comparison that holds while `key` exists as created at `revision`: what fences a
/// write to the lifetime of a lock or a leadership.
fn created_at(key: Vec<u8>, revision: i64) -> cairn_proto::etcdserverpb::Compare {
    use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    cairn_proto::etcdserverpb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key,
        target_union: Some(TargetUnion::CreateRevision(revision)),
        ..Default::default()
    }
}
