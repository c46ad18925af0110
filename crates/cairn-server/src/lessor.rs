//! Lease deadlines: kept by the leader alone, which revokes expired leases through the log.
//!
//! Which leases exist, their TTLs and their keys are replicated state (the kernel's). When each
//! one runs out is not: the leader keeps a deadline per lease in memory, renews it on keep-alive,
//! and proposes a revocation once it passes, so every member deletes the lease's keys at the same
//! revision. Followers pass keep-alives and time-to-live questions to the leader over the peer
//! port (`cairn.v1.Lessor`).
//!
//! A new leader does not know its predecessor's deadlines. As etcd does, it gives every lease its
//! full TTL from the moment it takes over: a leader change can lengthen a lease's life by up to
//! one TTL (plus the election), never shorten it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_kernel::{Command, LeaseId, LeaseRevokeRequest, NO_LEASE};
use cairn_proto::cairn_v1::lessor_client::LessorClient;
use cairn_proto::cairn_v1::lessor_server::{Lessor as LessorRpc, LessorServer};
use cairn_proto::cairn_v1::{LeaseRef, LeaseTtl};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::node::SharedNode;
use crate::status::replica_status;

/// How often the leader looks for expired leases: the most an expiry can be late by, on top of
/// committing the revocation.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How long a follower waits for the leader to answer a keep-alive.
const LEADER_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Which deadlines this member keeps: none unless it leads, and only for the term it leads in.
#[derive(Default)]
struct Deadlines {
    /// The term these deadlines belong to; `None` while this member does not lead.
    term: Option<u64>,
    due: HashMap<LeaseId, Instant>,
    /// Leases whose revocation has been proposed and not yet answered.
    revoking: HashSet<LeaseId>,
}

impl Deadlines {
    /// Brings the deadlines in line with the leases that exist (`ttls`) for a member that leads in
    /// `term` (or does not lead), and returns the leases that are due and not yet being revoked.
    fn sync(&mut self, term: Option<u64>, ttls: &[(LeaseId, i64)], now: Instant) -> Vec<LeaseId> {
        if self.term != term {
            self.due.clear();
            self.revoking.clear();
            self.term = term;
        }
        if term.is_none() {
            return Vec::new();
        }
        let live: HashSet<LeaseId> = ttls.iter().map(|(id, _)| *id).collect();
        self.due.retain(|id, _| live.contains(id));
        self.revoking.retain(|id| live.contains(id));
        for (id, ttl) in ttls {
            self.due.entry(*id).or_insert_with(|| now + seconds(*ttl));
        }
        let expired: Vec<LeaseId> = self
            .due
            .iter()
            .filter(|(id, deadline)| **deadline <= now && !self.revoking.contains(id))
            .map(|(id, _)| *id)
            .collect();
        self.revoking.extend(&expired);
        expired
    }
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// This member's part in keeping leases: deadlines while it leads, forwarding while it follows.
pub struct Lessor {
    node: SharedNode,
    deadlines: Mutex<Deadlines>,
    /// Connections to the peer ports of members that led, reused across calls.
    leaders: Mutex<HashMap<String, Channel>>,
    /// The smallest TTL granted, in seconds; shorter requests are raised to it, as etcd does.
    pub min_ttl: i64,
    next_id: AtomicI64,
}

impl Lessor {
    /// `election_timeout` sets the smallest TTL: etcd's 1.5 election timeouts, rounded up to a
    /// second, so a lease can outlive a leader change.
    pub fn new(node: SharedNode, election_timeout: Duration) -> Arc<Lessor> {
        let min_ttl = (election_timeout.as_millis() * 3).div_ceil(2 * 1000).max(1) as i64;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // etcd's id scheme: the member's low 16 bits, then a millisecond clock, then a counter,
        // so ids from different members and restarts do not collide.
        let first_id = ((node.replica.id as i64 & 0xffff) << 48) | ((now_ms & 0xff_ffff_ffff) << 8);
        Arc::new(Lessor {
            node,
            deadlines: Mutex::default(),
            leaders: Mutex::default(),
            min_ttl,
            next_id: AtomicI64::new(first_id & i64::MAX),
        })
    }

    /// A fresh lease id for a grant that left the choice to the server.
    pub fn new_id(&self) -> LeaseId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & i64::MAX;
        match id {
            NO_LEASE => self.new_id(),
            id => id,
        }
    }

    /// Watches for expired leases and revokes them while this member leads, until `stopped`.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                _ = interval.tick() => {}
            }
            for id in self.check_expiry().await {
                let lessor = self.clone();
                tokio::spawn(async move { lessor.revoke_expired(id).await });
            }
        }
    }

    async fn check_expiry(&self) -> Vec<LeaseId> {
        let term = self.leading_term();
        let ttls = match term {
            Some(_) => self.node.replica.kernel().read().await.lease_ttls(),
            None => Vec::new(),
        };
        self.deadlines
            .lock()
            .expect("deadlines lock")
            .sync(term, &ttls, Instant::now())
    }

    async fn revoke_expired(&self, id: LeaseId) {
        let command = Command::LeaseRevoke(LeaseRevokeRequest { id });
        match self.node.replica.write(command).await {
            Ok(_) => tracing::debug!(lease = format_args!("{id:x}"), "lease expired"),
            Err(error) => tracing::warn!(lease = format_args!("{id:x}"), %error, "revoking"),
        }
        // Refused or not, the next check decides again: a lease still there is retried.
        self.deadlines
            .lock()
            .expect("deadlines lock")
            .revoking
            .remove(&id);
    }

    /// The term this member leads in, if it leads.
    fn leading_term(&self) -> Option<u64> {
        let status = self.node.replica.status();
        (status.leader == Some(self.node.replica.id)).then_some(status.term)
    }

    /// Renews lease `id`; answers its TTL, or 0 if it does not exist (etcd's answer).
    pub async fn keep_alive(&self, id: LeaseId) -> Result<i64, Status> {
        if self.leading_term().is_none() {
            return self.ask_leader(id, Question::KeepAlive).await;
        }
        let Some(ttl) = self.leader_lease_ttl(id).await? else {
            return Ok(0);
        };
        let mut deadlines = self.deadlines.lock().expect("deadlines lock");
        if deadlines.term.is_some() {
            deadlines.due.insert(id, Instant::now() + seconds(ttl));
        }
        Ok(ttl)
    }

    /// The whole seconds lease `id` has left, or -1 if it does not exist (etcd's answer).
    pub async fn remaining(&self, id: LeaseId) -> Result<i64, Status> {
        if self.leading_term().is_none() {
            return self.ask_leader(id, Question::TimeToLive).await;
        }
        let Some(ttl) = self.leader_lease_ttl(id).await? else {
            return Ok(-1);
        };
        let deadlines = self.deadlines.lock().expect("deadlines lock");
        Ok(match deadlines.due.get(&id) {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()).as_secs() as i64,
            None => ttl,
        })
    }

    /// The TTL of lease `id` as the leader's kernel knows it. A grant a client has seen
    /// acknowledged may not be applied here yet, so a miss waits for everything committed.
    async fn leader_lease_ttl(&self, id: LeaseId) -> Result<Option<i64>, Status> {
        let replica = &self.node.replica;
        if let Some(ttl) = replica.kernel().read().await.lease_ttl(id) {
            return Ok(Some(ttl));
        }
        replica
            .read_barrier()
            .await
            .map_err(|error| replica_status(&error))?;
        Ok(replica.kernel().read().await.lease_ttl(id))
    }

    async fn ask_leader(&self, id: LeaseId, question: Question) -> Result<i64, Status> {
        let (leader, url) = self
            .node
            .replica
            .leader_peer()
            .and_then(|(leader, urls)| Some((leader, urls.into_iter().next()?)))
            .ok_or_else(|| Status::unavailable("etcdserver: no leader"))?;
        let channel = self.channel(&url)?;
        let mut client = LessorClient::new(channel);
        let mut request = Request::new(LeaseRef { id });
        request.set_timeout(LEADER_CALL_TIMEOUT);
        self.node.replica.label_for(&mut request, leader);
        let answer = match question {
            Question::KeepAlive => client.keep_alive(request).await,
            Question::TimeToLive => client.time_to_live(request).await,
        };
        answer.map(|response| response.into_inner().ttl)
    }

    fn channel(&self, url: &str) -> Result<Channel, Status> {
        let mut leaders = self.leaders.lock().expect("leader channels lock");
        if let Some(channel) = leaders.get(url) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|error| Status::internal(format!("leader peer URL {url}: {error}")))?
            .connect_timeout(LEADER_CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        leaders.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}

#[derive(Clone, Copy)]
enum Question {
    KeepAlive,
    TimeToLive,
}

/// `cairn.v1.Lessor` on the peer port: the leader's side of [`Lessor::ask_leader`].
pub struct LessorPeerService {
    lessor: Arc<Lessor>,
}

impl LessorPeerService {
    pub fn server(lessor: Arc<Lessor>) -> LessorServer<LessorPeerService> {
        LessorServer::new(LessorPeerService { lessor })
    }

    /// Only the leader answers, and only members of its cluster: a member that lost leadership
    /// since it was asked must not forward again, or two members could bounce a question
    /// between them.
    fn check_asker<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let replica = &self.lessor.node.replica;
        replica.admit_member(replica.admit(request.metadata())?)?;
        match self.lessor.leading_term() {
            Some(_) => Ok(()),
            None => Err(Status::unavailable("etcdserver: not leader")),
        }
    }
}

#[tonic::async_trait]
impl LessorRpc for LessorPeerService {
    async fn keep_alive(&self, request: Request<LeaseRef>) -> Result<Response<LeaseTtl>, Status> {
        self.check_asker(&request)?;
        let ttl = self.lessor.keep_alive(request.into_inner().id).await?;
        Ok(Response::new(LeaseTtl { ttl }))
    }

    async fn time_to_live(&self, request: Request<LeaseRef>) -> Result<Response<LeaseTtl>, Status> {
        self.check_asker(&request)?;
        let ttl = self.lessor.remaining(request.into_inner().id).await?;
        Ok(Response::new(LeaseTtl { ttl }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_start_at_full_ttl_and_restart_with_each_term() {
        let start = Instant::now();
        let mut deadlines = Deadlines::default();
        let leases = [(1, 5), (2, 10)];
        assert!(deadlines.sync(None, &leases, start).is_empty());
        assert!(deadlines.due.is_empty(), "a follower keeps no deadlines");

        assert!(deadlines.sync(Some(3), &leases, start).is_empty());
        let after_6s = start + Duration::from_secs(6);
        assert_eq!(deadlines.sync(Some(3), &leases, after_6s), vec![1]);
        assert!(
            deadlines.sync(Some(3), &leases, after_6s).is_empty(),
            "a lease being revoked is not revoked twice"
        );

        // A new term: every lease starts over at its full TTL.
        assert!(deadlines.sync(Some(4), &leases, after_6s).is_empty());
        let after_12s = start + Duration::from_secs(12);
        assert_eq!(deadlines.sync(Some(4), &leases, after_12s), vec![1]);
        let expired = deadlines.sync(Some(4), &[(2, 10)], start + Duration::from_secs(17));
        assert_eq!(expired, vec![2], "revoked leases are forgotten");
        assert_eq!(deadlines.due.len(), 1);
    }
}
