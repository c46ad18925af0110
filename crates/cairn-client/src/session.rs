use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::Error;

/// The pause before a failed keep-alive stream is opened again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A lease kept alive in the background: what locks, leaderships and registrations are held
/// under. Dropping it stops the keep-alives, so the lease (and everything attached to it) ends
/// within its TTL; [`Session::close`] revokes it at once.
#[derive(Debug)]
pub struct Session {
    lease: i64,
    ttl: i64,
    leases: LeaseClient<Channel>,
    keeping_alive: JoinHandle<()>,
    ended: watch::Receiver<Option<String>>,
}

impl Session {
    pub(crate) async fn start(channel: Channel, ttl: i64) -> Result<Session, Error> {
        let mut leases = LeaseClient::new(channel);
        let granted = leases
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await?
            .into_inner();
        let (report, ended) = watch::channel(None);
        let keeping_alive =
            tokio::spawn(keep_alive(leases.clone(), granted.id, granted.ttl, report));
        Ok(Session {
            lease: granted.id,
            ttl: granted.ttl,
            leases,
            keeping_alive,
            ended,
        })
    }

    /// The lease's ID.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// The lease's TTL in seconds, as the server granted it.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Waits until the session ends on its own (the lease expired or was revoked, or the
    /// keep-alives could not get through), and says why.
    pub async fn ended(&self) -> Error {
        let mut ended = self.ended.clone();
        let reason = ended
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.clone().unwrap_or_default())
            .unwrap_or_else(|_| "the keep-alive task stopped".to_string());
        Error::SessionEnded(reason)
    }

    /// Revokes the lease: everything held under it ends now.
    pub async fn close(mut self) -> Result<(), Error> {
        self.keeping_alive.abort();
        self.leases
            .lease_revoke(LeaseRevokeRequest { id: self.lease })
            .await?;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeping_alive.abort();
    }
}

/// Renews `lease` every third of its TTL until it cannot, then reports why.
///
/// A failed renewal (a member restarting, a leader election, an overloaded cluster) is tried
/// again on a new stream, as etcd's clients do; the session ends only when the server says the
/// lease is gone, or when no renewal got through for a whole TTL, after which it may be.
async fn keep_alive(
    mut leases: LeaseClient<Channel>,
    lease: i64,
    ttl: i64,
    report: watch::Sender<Option<String>>,
) {
    let ttl = Duration::from_secs(ttl.max(1) as u64);
    let period = ttl / 3;
    let mut renewed = Instant::now();
    let reason = loop {
        let failure = match renew_until_failure(&mut leases, lease, period, &mut renewed).await {
            Renewals::Expired => break format!("lease {lease:x} expired"),
            Renewals::Failed(failure) => failure,
        };
        if renewed.elapsed() >= ttl {
            break format!("no renewal of lease {lease:x} got through for its TTL: {failure}");
        }
        tracing::debug!(lease = format_args!("{lease:x}"), %failure, "renewing again");
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    let _ = report.send(Some(reason));
}

/// How one keep-alive stream ended.
enum Renewals {
    /// The server answered that the lease does not exist.
    Expired,
    /// The stream failed; why.
    Failed(String),
}

/// Renews `lease` every `period` on one stream, noting each success in `renewed`. The requests
/// are sent from this task, so aborting it ends the stream (a stream driven by the connection
/// would keep renewing after the session is gone).
async fn renew_until_failure(
    leases: &mut LeaseClient<Channel>,
    lease: i64,
    period: Duration,
    renewed: &mut Instant,
) -> Renewals {
    let (requests, stream) = mpsc::channel(1);
    let mut responses = match leases.lease_keep_alive(ReceiverStream::new(stream)).await {
        Ok(responses) => responses.into_inner(),
        Err(status) => return Renewals::Failed(status.message().to_string()),
    };
    // Renewals go out every period from the last one sent, however long an answer took.
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if requests
            .send(LeaseKeepAliveRequest { id: lease })
            .await
            .is_err()
        {
            return Renewals::Failed("the keep-alive stream closed".to_string());
        }
        match responses.message().await {
            Ok(Some(response)) if response.ttl > 0 => *renewed = Instant::now(),
            Ok(Some(_)) => return Renewals::Expired,
            Ok(None) => return Renewals::Failed("the server closed the stream".to_string()),
            Err(status) => return Renewals::Failed(status.message().to_string()),
        }
    }
}
