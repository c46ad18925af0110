//! `cairn lock` and `cairn elect`: the bundled lock and election from the command line, as
//! etcdctl's `lock` and `elect` are, over `cairn.v1.Locks` and etcd's v3election service.
//!
//! Each holds a lease (a session) for as long as it runs and keeps it alive, so a process that
//! dies without cleaning up gives up its lock or leadership once the lease's TTL runs out.

use std::time::Duration;

use anyhow::{Context, bail};
use cairn_proto::cairn_v1 as cairn_pb;
use cairn_proto::cairn_v1::locks_client::LocksClient;
use cairn_proto::etcdserverpb as etcd_pb;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::v3electionpb as election_pb;
use cairn_proto::v3electionpb::election_client::ElectionClient;
use clap::Args;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::cli_connect;

#[derive(Args)]
pub struct SessionArgs {
    /// Comma-separated client URLs of cluster members; the first that answers is used.
    #[arg(long, env = "CAIRN_ENDPOINTS", default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// Seconds the lock or leadership outlives this process if it dies without giving it up
    /// (the TTL of its lease).
    #[arg(long, default_value_t = 60)]
    ttl: i64,
}

#[derive(Args)]
pub struct LockArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Give up waiting for the lock after this long (e.g. `10s`); waits as long as it takes
    /// otherwise.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// The lock's name.
    name: String,
    /// A command to run while holding the lock, with the lock's key and fencing token in
    /// `CAIRN_LOCK_KEY` and `CAIRN_LOCK_FENCING_TOKEN`; its exit status becomes this one's.
    /// Without one, the lock is held until SIGINT or SIGTERM.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct ElectArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Print the election's leader and value at every change instead of campaigning.
    #[arg(short, long)]
    listen: bool,
    /// The election's name.
    name: String,
    /// The value to proclaim as leader; required unless --listen.
    #[arg(required_unless_present = "listen")]
    proposal: Option<String>,
}

/// A lease kept alive in the background until dropped or revoked.
struct Session {
    lease: i64,
    leases: LeaseClient<Channel>,
    keeping_alive: JoinHandle<anyhow::Error>,
}

impl Session {
    async fn start(channel: Channel, ttl: i64) -> anyhow::Result<Session> {
        let mut leases = LeaseClient::new(channel);
        let lease = leases
            .lease_grant(etcd_pb::LeaseGrantRequest { ttl, id: 0 })
            .await?
            .into_inner()
            .id;
        let keeping_alive = tokio::spawn(keep_alive(leases.clone(), lease, ttl));
        Ok(Session {
            lease,
            leases,
            keeping_alive,
        })
    }

    /// Waits until the lease is lost, and says why.
    async fn lost(&mut self) -> anyhow::Error {
        match (&mut self.keeping_alive).await {
            Ok(error) => error,
            Err(error) => error.into(),
        }
    }

    async fn end(mut self) -> anyhow::Result<()> {
        self.keeping_alive.abort();
        self.leases
            .lease_revoke(etcd_pb::LeaseRevokeRequest { id: self.lease })
            .await?;
        Ok(())
    }
}

/// Renews `lease` every third of its TTL; returns why it could not go on.
async fn keep_alive(mut leases: LeaseClient<Channel>, lease: i64, ttl: i64) -> anyhow::Error {
    let period = Duration::from_millis((ttl.max(1) as u64) * 1000 / 3);
    let requests = keep_alive_requests(lease, period);
    let mut responses = match leases.lease_keep_alive(requests).await {
        Ok(responses) => responses.into_inner(),
        Err(status) => return status.into(),
    };
    loop {
        match responses.message().await {
            Ok(Some(response)) if response.ttl > 0 => {}
            Ok(Some(_)) => return anyhow::anyhow!("lease {lease:x} expired"),
            Ok(None) => return anyhow::anyhow!("the server ended the lease keep-alive stream"),
            Err(status) => return status.into(),
        }
    }
}

/// A keep-alive request for `lease` now and every `period`.
fn keep_alive_requests(
    lease: i64,
    period: Duration,
) -> impl tokio_stream::Stream<Item = etcd_pb::LeaseKeepAliveRequest> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(period))
        .map(move |_| etcd_pb::LeaseKeepAliveRequest { id: lease })
}

pub async fn lock(args: LockArgs) -> anyhow::Result<i32> {
    let channel = cli_connect::channel(&args.session.endpoints).await?;
    let mut session = Session::start(channel.clone(), args.session.ttl).await?;
    let mut locks = LocksClient::new(channel);
    let acquired = locks
        .acquire(cairn_pb::AcquireRequest {
            name: args.name.clone().into_bytes(),
            lease: session.lease,
            only_if_free: false,
            timeout_ms: args.timeout.map_or(0, |t| t.as_millis().max(1) as u64),
        })
        .await?
        .into_inner();
    let key = String::from_utf8_lossy(&acquired.key).into_owned();
    let status = if args.command.is_empty() {
        println!("{key}");
        tokio::select! {
            () = crate::shutdown_signal() => 0,
            error = session.lost() => return Err(error.context("the lock was lost")),
        }
    } else {
        let mut child = tokio::process::Command::new(&args.command[0])
            .args(&args.command[1..])
            .env("CAIRN_LOCK_KEY", &key)
            .env(
                "CAIRN_LOCK_FENCING_TOKEN",
                acquired.fencing_token.to_string(),
            )
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {:?}", args.command[0]))?;
        tokio::select! {
            exit = child.wait() => exit?.code().unwrap_or(1),
            () = crate::shutdown_signal() => 130,
            error = session.lost() => return Err(error.context("the lock was lost; the command was killed")),
        }
    };
    locks
        .release(cairn_pb::ReleaseRequest {
            key: acquired.key,
            fencing_token: acquired.fencing_token,
        })
        .await?;
    session.end().await?;
    Ok(status)
}

pub async fn elect(args: ElectArgs) -> anyhow::Result<i32> {
    let channel = cli_connect::channel(&args.session.endpoints).await?;
    let mut elections = ElectionClient::new(channel.clone());
    let name = args.name.into_bytes();
    if args.listen {
        let mut changes = elections
            .observe(election_pb::LeaderRequest { name })
            .await?
            .into_inner();
        loop {
            tokio::select! {
                change = changes.message() => match change? {
                    Some(change) => print_leader(change.kv.unwrap_or_default()),
                    None => bail!("the server ended the observation"),
                },
                () = crate::shutdown_signal() => return Ok(0),
            }
        }
    }
    let proposal = args.proposal.unwrap_or_default();
    let mut session = Session::start(channel, args.session.ttl).await?;
    let campaign = elections.campaign(election_pb::CampaignRequest {
        name,
        lease: session.lease,
        value: proposal.clone().into_bytes(),
    });
    let leader = tokio::select! {
        response = campaign => response?.into_inner().leader.unwrap_or_default(),
        () = crate::shutdown_signal() => {
            session.end().await?;
            return Ok(130);
        }
    };
    println!("{}", String::from_utf8_lossy(&leader.key));
    println!("{proposal}");
    tokio::select! {
        () = crate::shutdown_signal() => {}
        error = session.lost() => return Err(error.context("leadership was lost")),
    }
    elections
        .resign(election_pb::ResignRequest {
            leader: Some(leader),
        })
        .await?;
    session.end().await?;
    Ok(0)
}

fn print_leader(kv: cairn_proto::mvccpb::KeyValue) {
    println!("{}", String::from_utf8_lossy(&kv.key));
    println!("{}", String::from_utf8_lossy(&kv.value));
}
