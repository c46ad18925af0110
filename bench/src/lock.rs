//! The `lock` workload: acquire and release through etcd's v3lock service, which etcd and Cairn
//! both serve, under the closed-loop load. Each client holds a lease of its own (as a separate
//! process would) and contends for one of `--locks` locks; a request is one Lock and its Unlock,
//! so throughput is acquisitions per second.

use anyhow::Context;
use cairn_proto::etcdserverpb::LeaseGrantRequest;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use clap::Args as ClapArgs;
use tonic::transport::Channel;

use crate::Args;
use crate::load::{self, Client};

/// Long enough that no lease expires during a run; the leases are revoked by no one and simply
/// run out afterwards.
const LEASE_TTL_S: i64 = 120;

#[derive(ClapArgs, Clone, Copy, Debug)]
pub struct LockArgs {
    /// Distinct locks the clients spread over (client i takes lock i modulo this).
    #[arg(long, default_value_t = 1)]
    locks: usize,
}

struct Locker {
    locks: LockClient<Channel>,
    request: LockRequest,
}

impl Client for Locker {
    async fn send(&mut self) -> anyhow::Result<()> {
        let key = self
            .locks
            .lock(self.request.clone())
            .await
            .context("lock")?
            .into_inner()
            .key;
        self.locks
            .unlock(UnlockRequest { key })
            .await
            .context("unlock")?;
        Ok(())
    }
}

pub async fn run(args: &Args, lock: LockArgs) -> anyhow::Result<()> {
    anyhow::ensure!(lock.locks > 0, "--locks must be at least 1");
    let channels = load::channels(&args.endpoints, args.conns).await?;
    let mut clients = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let channel = channels[i % channels.len()].clone();
        let lease = LeaseClient::new(channel.clone())
            .lease_grant(LeaseGrantRequest {
                ttl: LEASE_TTL_S,
                id: 0,
            })
            .await
            .context("granting a client's lease")?
            .into_inner()
            .id;
        clients.push(Locker {
            locks: LockClient::new(channel),
            request: LockRequest {
                name: format!("bench-lock/{}", i % lock.locks).into_bytes(),
                lease,
            },
        });
    }
    let measured = load::run(clients, args.total()).await?;
    println!(
        "workload=lock locks={} clients={} conns={} {}",
        lock.locks,
        args.clients,
        args.conns,
        measured.fields(),
    );
    Ok(())
}
