//! [`Replica`]: this member's handle on the cluster. Writes and linearizable reads work the same
//! on every member; a follower passes them to the leader itself, so clients never need to know
//! which member leads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_kernel::plugin::PluginRuntime;
use cairn_kernel::{Command, Kernel, Limits};
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, broadcast, mpsc, oneshot};
use tonic::Status;

use crate::applied::{AppliedLog, applied_log};
use crate::fault::ApplyFault;
use crate::log_store::LogStore;
use crate::network::{CallError, PeerAddress, PeerCall, PeerNetwork, Peers, peer_address};
use crate::peer_identity::{ClusterId, PeerIdentity, Refusal, Sender, Throttle, log_refused};
use crate::proposer::{Forwarded, Outcome, Proposer, Queued};
use crate::state_machine::{Backup, StateDirs, StateMachine, backup, last_applied, open_kernel};
use crate::types::{AppliedEvents, Batch, Member, MemberId, Raft};

/// How long a write or a linearizable read may wait for a leader before it fails.
pub(crate) const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long a `member add` waits to learn who answers at the new member's URL.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between attempts while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Applies announced to watchers that a slow receiver may fall behind by before it must read
/// history instead.
const EVENT_BATCHES_BUFFERED: usize = 1024;

/// Timing and retention settings, with etcd's names and defaults where etcd has them.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// Entries applied between snapshots.
    pub snapshot_count: u64,
    /// Entries kept in the log behind a snapshot, so a slow follower can catch up from the log.
    pub snapshot_catchup_entries: u64,
    /// A fault to inject, for tests of how a failing member stops; none for real.
    pub fault: Option<ApplyFault>,
}

impl Default for RaftSettings {
    fn default() -> RaftSettings {
        RaftSettings {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5_000,
            fault: None,
        }
    }
}

/// Why the cluster could not do what was asked. Crosses the wire between members, so it is
/// plain data.
#[derive(Clone, Debug, thiserror::Error, Serialize, Deserialize, PartialEq, Eq)]
pub enum ReplicaError {
    #[error("no leader")]
    NoLeader,
    /// The outcome is unknown: the request may still be applied.
    #[error("request timed out: {0}")]
    Timeout(String),
    #[error("quorum unreachable: {0}")]
    Unavailable(String),
    #[error("this member is shutting down")]
    Stopped,
    #[error("member {0:x} not found")]
    MemberNotFound(MemberId),
    #[error("peer URLs already exist")]
    PeerUrlExists,
    #[error("member {0:x} is not a learner")]
    NotLearner(MemberId),
    #[error("learner {0:x} is not yet in sync with the leader")]
    LearnerNotReady(MemberId),
    #[error("removing this member would leave too few to reach quorum")]
    Unhealthy,
    #[error("membership change refused: {0}")]
    Refused(String),
    #[error("this member is not the leader")]
    NotLeader,
    #[error("member {0:x} cannot take over leadership: it is not a voting member")]
    BadTransferee(MemberId),
    #[error("leadership did not move in time")]
    TransferTimeout,
    #[error(
        "a member of another cluster ({theirs:x}; this cluster is {ours:x}) answers at {url}: \
         check the peer URL"
    )]
    PeerInOtherCluster {
        url: String,
        theirs: ClusterId,
        ours: ClusterId,
    },
    #[error(
        "member {member:x}, no longer of this cluster, still answers at {url}: a removed member \
         must be stopped, and its data directory emptied, before it is added again"
    )]
    PeerAlreadyMember { url: String, member: MemberId },
    /// The leader refused this member: it is not a member of the leader's cluster (removed, or
    /// never added). Nothing was done.
    #[error("{0}")]
    NotAccepted(String),
}

/// A member as the cluster API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: MemberId,
    pub member: Member,
    pub is_learner: bool,
}

/// Where this member stands in Raft, for status and response headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    pub leader: Option<MemberId>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub is_learner: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    Add {
        id: MemberId,
        member: Member,
        learner: bool,
    },
    Remove {
        id: MemberId,
    },
    Promote {
        id: MemberId,
    },
    Update {
        id: MemberId,
        peer_urls: Vec<String>,
    },
    /// A member announces the name and client URLs it runs with.
    Publish {
        id: MemberId,
        name: String,
        client_urls: Vec<String>,
    },
}

/// How a member starts.
#[derive(Clone, Debug)]
pub enum Bootstrap {
    /// Part of a new cluster of exactly these members; the first start initializes Raft.
    New(BTreeMap<MemberId, Member>),
    /// Joins a running cluster that has already added it.
    Existing,
}

/// This member's handle on the cluster.
#[derive(Clone)]
pub struct Replica {
    pub id: MemberId,
    raft: Raft,
    peers: Peers,
    kernel: Arc<RwLock<Kernel>>,
    dirs: StateDirs,
    proposer: Proposer,
    /// Writes waiting to be batched into the next log entry.
    queue: mpsc::Sender<Queued>,
    reads: Arc<Mutex<ReadRounds>>,
    events: broadcast::Sender<Arc<AppliedEvents>>,
    applied: AppliedLog,
    /// Peers this member refused, logged a few times a minute at most.
    refusals: Arc<Throttle<MemberId>>,
    /// The state machine's failure flag.
    kernel_failed: Arc<AtomicBool>,
}

/// Linearizable reads waiting for a ReadIndex round.
#[derive(Default)]
struct ReadRounds {
    running: bool,
    waiting: Vec<oneshot::Sender<Result<u64, ReplicaError>>>,
}

impl Replica {
    /// Opens this member's log and kernel under `data_dir` and starts Raft, as the member and
    /// cluster `identity` names. Plugin commands run on `plugins`; it is given before Raft starts
    /// because replaying the log may run them.
    pub async fn start(
        identity: PeerIdentity,
        data_dir: &Path,
        limits: Limits,
        settings: &RaftSettings,
        bootstrap: Bootstrap,
        plugins: Arc<dyn PluginRuntime>,
    ) -> Result<Replica, StartError> {
        let id = identity.member_id;
        let dirs = StateDirs::new(data_dir);
        let (mut kernel, kernel_name) = open_kernel(&dirs, limits)?;
        kernel.set_plugin_runtime(plugins);
        let applied_at_open = last_applied(&kernel)
            .map_err(|e| StartError::Raft(format!("reading how far the kernel applied: {e}")))?;
        let (applied_publisher, applied) = applied_log(applied_at_open.map_or(0, |id| id.index));
        let kernel = Arc::new(RwLock::new(kernel));
        let log_store = LogStore::open(&dirs.log, id)?;
        let (events, _) = broadcast::channel(EVENT_BATCHES_BUFFERED);
        let state_machine = StateMachine::new(
            kernel.clone(),
            kernel_name,
            dirs.clone(),
            limits,
            events.clone(),
            log_store.synced(),
            applied_publisher,
        )
        .with_fault(settings.fault.clone());
        let kernel_failed = state_machine.failed();
        let heartbeat = settings.heartbeat_interval.as_millis() as u64;
        let election = settings.election_timeout.as_millis() as u64;
        let config = Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: heartbeat,
            // openraft 0.9 draws each member's timeout once, in [min, max), and calls an
            // election when it has heard nothing from the leader for max (the leader lease, in
            // which it also refuses to vote for anyone else) plus that drawn timeout. With min
            // and max at 2/5 and 3/5 of the election timeout, a follower stands after 1 to 1.2
            // election timeouts of silence (never sooner than etcd's, so a busy leader is not
            // deposed more readily), by when every other follower's lease has run out and the
            // first bid can win: a new leader within about 1.2 timeouts, and a second round
            // after a split vote still lands within two.
            election_timeout_min: election * 2 / 5,
            election_timeout_max: election * 3 / 5,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 1_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_count),
            max_in_snapshot_log_to_keep: settings.snapshot_catchup_entries,
            snapshot_max_chunk_size: 1 << 20,
            ..Config::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let peers = Peers::new(identity);
        let network = PeerNetwork {
            peers: peers.clone(),
            synced: log_store.synced(),
        };
        let truncations = log_store.truncations();
        let in_place_sync = log_store.in_place_sync();
        let raft = Raft::new(id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if let Bootstrap::New(members) = bootstrap {
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            if !initialized {
                raft.initialize(members)
                    .await
                    .map_err(|e| StartError::Raft(e.to_string()))?;
            }
        }
        let proposer = Proposer::new(
            raft.clone(),
            peers.clone(),
            truncations,
            settings.election_timeout,
            applied.clone(),
            in_place_sync,
        );
        let queue = proposer.start_batching();
        Ok(Replica {
            id,
            raft,
            peers,
            kernel,
            dirs,
            proposer,
            queue,
            reads: Arc::default(),
            events,
            applied,
            refusals: Arc::default(),
            kernel_failed,
        })
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The kernel, for reads; its lock is shared with the state machine, which applies under it.
    pub fn kernel(&self) -> &Arc<RwLock<Kernel>> {
        &self.kernel
    }

    /// Announcements of what each apply changed, in revision order, from now on. A receiver that
    /// falls more than a thousand applies behind is told it lagged and must read history.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedEvents>> {
        self.events.subscribe()
    }

    /// The member this one believes leads, if any: its ID and peer URLs.
    pub fn leader_peer(&self) -> Option<(MemberId, Vec<String>)> {
        let leader = self.status().leader?;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let member = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, member.peer_urls.clone()))
    }

    /// Who this member is to its peers: its cluster's ID and its own.
    pub fn identity(&self) -> PeerIdentity {
        self.peers.identity()
    }

    /// Labels `request` for member `to`'s peer port, which refuses a request without the labels.
    pub fn label_for<T>(&self, request: &mut tonic::Request<T>, to: MemberId) {
        self.identity().stamp(request.metadata_mut(), to);
    }

    /// The member a peer request comes from, if its labels name this member of this cluster;
    /// otherwise the refusal to answer it with, logged a few times a minute at most.
    pub fn admit(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Sender, Status> {
        self.identity()
            .admit(metadata)
            .map_err(|refusal| self.refuse(refusal))
    }

    /// Refuses peer `from` unless it is a voter or a learner in the newest membership this
    /// member knows; as [`Replica::admit`], the refusal is logged. A sender that names no one
    /// cannot be checked, and was admitted as one of this cluster's.
    pub fn admit_member(&self, from: Sender) -> Result<(), Status> {
        match from {
            Sender::Member(id) if !self.knows(id) => {
                Err(self.refuse(self.identity().not_a_member(id)))
            }
            Sender::Member(_) | Sender::Unlabelled => Ok(()),
        }
    }

    /// Whether `id` is a voter or a learner in the newest membership this member knows.
    fn knows(&self, id: MemberId) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    fn refuse(&self, refusal: Refusal) -> Status {
        log_refused(&self.refusals, &refusal);
        refusal.into_status()
    }

    /// Whether the state machine failed to apply or install: the kernel's memory may then be
    /// ahead of what it committed, and Raft stops.
    pub fn kernel_failed(&self) -> bool {
        self.kernel_failed.load(Ordering::Acquire)
    }

    /// Waits until Raft stops of itself, through a panic or a fatal error of its core, its log or
    /// the state machine, rather than by [`Replica::shutdown`]; returns why. A member whose Raft
    /// has stopped can neither write nor read linearizably, and its status would still show the
    /// role it last had, so the server stops with it rather than linger.
    pub async fn failure(&self) -> String {
        let mut metrics = self.raft.metrics();
        // Raft's core holds the sending side of its metrics for as long as it runs, and reports
        // why it stopped as its last metrics, unless it panicked.
        while metrics.changed().await.is_ok() {}
        let reported = metrics.borrow().running_state.clone();
        let fatal = match reported {
            Err(fatal) => fatal,
            Ok(()) => match self.raft.is_initialized().await {
                Err(fatal) => fatal,
                Ok(_) => return "Raft's core ended without a reason".to_string(),
            },
        };
        match fatal {
            Fatal::Panicked => "Raft's core panicked".to_string(),
            fatal => fatal.to_string(),
        }
    }

    /// Writes a backup of this member's applied state, in the snapshot format.
    pub async fn backup(&self) -> Result<Backup, ReplicaError> {
        backup(&self.kernel, &self.dirs)
            .await
            .map_err(|error| ReplicaError::Unavailable(format!("writing a backup: {error}")))
    }

    /// Stops Raft; the kernel closes once its last handle is dropped.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
    }

    /// The newest term this member knows, for response headers.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn status(&self) -> RaftStatus {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        RaftStatus {
            leader: metrics
                .current_leader
                .filter(|_| !self.proposer.lost_quorum(&metrics)),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            is_learner: membership.get_node(&self.id).is_some()
                && !membership.voter_ids().any(|id| id == self.id),
        }
    }

    /// Every member of the newest membership this member knows, voters and learners.
    pub fn members(&self) -> Vec<MemberStatus> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        members_of(metrics.membership_config.membership())
    }

    /// Applies `command` through the log, on whichever member leads, and returns its outcome.
    /// Writes that arrive while the previous entry is being committed share the next one.
    pub async fn write(&self, command: Command) -> Result<Outcome, ReplicaError> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued::new(command, reply);
        self.queue
            .send(queued)
            .await
            .map_err(|_| ReplicaError::Stopped)?;
        answer.await.map_err(|_| ReplicaError::Stopped)?
    }

    /// As leader, applies a batch of writes forwarded by a follower and answers each. Its
    /// commands join this member's own queue, so what reaches the leader from every member while
    /// entries commit shares the next entry (one append, one fsync, one replication round)
    /// instead of each follower's batch taking an entry of its own. A write answered
    /// [`ReplicaError::NoLeader`] was not applied: this member stopped leading before proposing it.
    /// With the answers goes how far this member has applied its log, which the follower applies
    /// through before it answers its clients.
    pub(crate) async fn leader_write(&self, batch: Batch) -> Result<Forwarded, ReplicaError> {
        if !self.proposer.leads() {
            // Nothing was queued, so the follower may send the whole batch elsewhere.
            return Err(ReplicaError::NoLeader);
        }
        let mut answers = Vec::with_capacity(batch.commands.len());
        for command in Arc::unwrap_or_clone(batch.commands) {
            let (reply, answer) = oneshot::channel();
            self.queue
                .send(Queued::forwarded(command, reply))
                .await
                .map_err(|_| ReplicaError::Stopped)?;
            answers.push(answer);
        }
        let mut answered = Vec::with_capacity(answers.len());
        for answer in answers {
            answered.push(answer.await.unwrap_or(Err(ReplicaError::Stopped)));
        }
        // Announced as each entry is applied, before its writers are answered; Raft's metrics
        // are published later and may not cover these writes yet.
        Ok(Forwarded {
            answers: answered,
            applied: self.applied.current(),
        })
    }

    /// Returns once this member has applied everything committed before the call: a read of the
    /// local kernel after it is linearizable (Raft's ReadIndex, through the leader if need be).
    pub async fn read_barrier(&self) -> Result<(), ReplicaError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let index = self.read_index().await?;
        self.applied.reaching(index, deadline).await
    }

    /// The read index of a ReadIndex round that starts after this call. Reads that arrive while
    /// a round is running share the next one, as etcd batches them: one quorum round serves
    /// them all, and each still sees every write committed before it arrived.
    async fn read_index(&self) -> Result<u64, ReplicaError> {
        let (reply, answer) = oneshot::channel();
        let start_rounds = {
            let mut rounds = self.reads.lock().expect("read rounds poisoned");
            rounds.waiting.push(reply);
            !std::mem::replace(&mut rounds.running, true)
        };
        if start_rounds {
            tokio::spawn(self.clone().run_read_rounds());
        }
        answer.await.map_err(|_| ReplicaError::Stopped)?
    }

    /// Runs rounds while reads wait for one; each round serves the reads that arrived before it.
    async fn run_read_rounds(self) {
        loop {
            let waiting = {
                let mut rounds = self.reads.lock().expect("read rounds poisoned");
                if rounds.waiting.is_empty() {
                    rounds.running = false;
                    return;
                }
                std::mem::take(&mut rounds.waiting)
            };
            let index = self.read_index_round().await;
            for reader in waiting {
                let _ = reader.send(index.clone());
            }
        }
    }

    /// One ReadIndex round: the leader's commit index once it has confirmed with a quorum that
    /// it still leads, asked of the leader when this member follows.
    async fn read_index_round(&self) -> Result<u64, ReplicaError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let leader = match leader_elsewhere(&self.raft) {
                Some(leader) => leader,
                None => match self.leader_read_index().await {
                    Ok(index) => return Ok(index),
                    Err(ReadIndexError::NotLeader(leader)) => leader,
                    Err(ReadIndexError::Failed(error)) => return Err(error),
                },
            };
            if let Some(leader) = leader_address(&leader) {
                let answer: Result<Result<u64, ReplicaError>, CallError> = self
                    .peers
                    .call(
                        &leader,
                        PeerCall::ReadIndex,
                        &(),
                        deadline
                            .saturating_duration_since(Instant::now())
                            .max(RETRY_PAUSE),
                    )
                    .await;
                match answer {
                    // No leader there, or the leader this member knows of is down: wait to
                    // learn of the next.
                    Ok(Err(ReplicaError::NoLeader)) | Err(CallError::Refused { .. }) => {}
                    Ok(answer) => return answer,
                    Err(CallError::NotAccepted { reason, .. }) => {
                        return Err(ReplicaError::NotAccepted(reason));
                    }
                    Err(error) => return Err(ReplicaError::Unavailable(error.to_string())),
                }
            }
            pause_or_give_up(deadline).await?;
        }
    }

    /// As leader, the index a linearizable read must wait for.
    pub(crate) async fn leader_read_index(&self) -> Result<u64, ReadIndexError> {
        match self.raft.get_read_log_id().await {
            Ok((read, _)) => Ok(read.map_or(0, |id| id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(leader))) => {
                Err(ReadIndexError::NotLeader(leader))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(error))) => Err(
                ReadIndexError::Failed(ReplicaError::Unavailable(error.to_string())),
            ),
            Err(RaftError::Fatal(_)) => Err(ReadIndexError::Failed(ReplicaError::Stopped)),
        }
    }

    /// As leader, hands leadership to voter `target` (etcd's MoveLeader).
    ///
    /// openraft 0.9 has no leader transfer, so it is done by hand: once `target` holds the whole
    /// log, this member stops sending heartbeats and asks `target` to stand for election. A leader
    /// gives its vote to an up-to-date candidate once it has led for an election timeout, and
    /// followers do once their leader lease has run out, 3/5 of an election timeout after the last
    /// heartbeat. `target` is asked again every fifth of an election timeout until it leads, so
    /// its bid after the leases run out comes well before the other followers stand on their own,
    /// 1 to 1.2 election timeouts after the last heartbeat, and wins; this member steps down on
    /// seeing its higher term.
    pub async fn move_leader(&self, target: MemberId) -> Result<(), ReplicaError> {
        let deadline = Instant::now() + LEADER_WAIT + 4 * self.proposer.quorum_contact_max;
        let (target_member, last_log_index) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.state != ServerState::Leader || self.proposer.lost_quorum(&metrics) {
                return Err(ReplicaError::NotLeader);
            }
            let membership = metrics.membership_config.membership();
            if !membership.voter_ids().any(|id| id == target) {
                return Err(ReplicaError::BadTransferee(target));
            }
            let member = membership
                .get_node(&target)
                .cloned()
                .ok_or(ReplicaError::BadTransferee(target))?;
            (member, metrics.last_log_index.unwrap_or(0))
        };
        if target == self.id {
            return Ok(());
        }
        let transferee =
            peer_address(target, &target_member).ok_or(ReplicaError::BadTransferee(target))?;
        self.raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .metrics(
                |metrics| {
                    let matched = metrics.replication.as_ref().and_then(|r| r.get(&target));
                    matched
                        .copied()
                        .flatten()
                        .is_some_and(|log| log.index >= last_log_index)
                },
                "the transferee holds the whole log",
            )
            .await
            .map_err(|_| ReplicaError::TransferTimeout)?;

        self.raft.runtime_config().heartbeat(false);
        let moved = self.hand_over(&transferee, deadline).await;
        self.raft.runtime_config().heartbeat(true);
        moved
    }

    async fn hand_over(
        &self,
        transferee: &PeerAddress,
        deadline: Instant,
    ) -> Result<(), ReplicaError> {
        let target = transferee.id;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ReplicaError::TransferTimeout);
            }
            let asked: Result<Result<(), ReplicaError>, _> = self
                .peers
                .call(transferee, PeerCall::Elect, &(), remaining)
                .await;
            match asked {
                Ok(Err(error)) => return Err(error),
                Err(CallError::NotAccepted { reason, .. }) => {
                    return Err(ReplicaError::NotAccepted(reason));
                }
                _ => {}
            }
            let elected = self
                .raft
                .wait(Some((self.proposer.quorum_contact_max / 5).min(remaining)))
                .metrics(
                    |metrics| metrics.current_leader == Some(target),
                    "the transferee leads",
                )
                .await;
            if elected.is_ok() {
                return Ok(());
            }
            let metrics = self.raft.metrics();
            let leader = metrics.borrow().current_leader;
            // Another member won the election: leadership moved, though not where asked.
            if leader.is_some_and(|leader| leader != self.id && leader != target) {
                return Err(ReplicaError::TransferTimeout);
            }
        }
    }

    /// Stands for election at once, as the target of a leader transfer.
    pub(crate) async fn stand_for_election(&self) -> Result<(), ReplicaError> {
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|_| ReplicaError::Stopped)
    }

    /// Adds a member (as a learner or a voter); returns the new member list. Refused before the
    /// membership changes when a member of another cluster, or of this one, answers at one of
    /// `peer_urls`.
    pub async fn add_member(
        &self,
        id: MemberId,
        peer_urls: Vec<String>,
        learner: bool,
    ) -> Result<Vec<MemberStatus>, ReplicaError> {
        self.check_unclaimed(&peer_urls).await?;
        let member = Member {
            name: String::new(),
            peer_urls,
            client_urls: Vec::new(),
        };
        self.change(MembershipChange::Add {
            id,
            member,
            learner,
        })
        .await
    }

    /// Fails if a member answers at one of `peer_urls`. A new member is normally added before it
    /// starts, so nothing answers there yet; the peer transport refuses another cluster's member
    /// in any case, and this says so to whoever typed the URL.
    async fn check_unclaimed(&self, peer_urls: &[String]) -> Result<(), ReplicaError> {
        let ours = self.identity().cluster_id;
        for url in peer_urls {
            // Whatever keeps a URL from answering, nothing there belongs to a cluster yet; should a
            // member of another cluster answer there later, it refuses this cluster's streams.
            // Asked on a connection of its own, not one kept for a member.
            let Ok(answer) = crate::network::identify(url, IDENTIFY_TIMEOUT).await else {
                continue;
            };
            let url = url.clone();
            return Err(
                if answer.cluster_id == ours && self.knows(answer.member_id) {
                    // A member of this cluster, under another of its URLs: etcd's own refusal.
                    ReplicaError::PeerUrlExists
                } else if answer.cluster_id == ours {
                    ReplicaError::PeerAlreadyMember {
                        url,
                        member: answer.member_id,
                    }
                } else {
                    ReplicaError::PeerInOtherCluster {
                        url,
                        theirs: answer.cluster_id,
                        ours,
                    }
                },
            );
        }
        Ok(())
    }

    pub async fn remove_member(&self, id: MemberId) -> Result<Vec<MemberStatus>, ReplicaError> {
        self.change(MembershipChange::Remove { id }).await
    }

    pub async fn promote_member(&self, id: MemberId) -> Result<Vec<MemberStatus>, ReplicaError> {
        self.change(MembershipChange::Promote { id }).await
    }

    pub async fn update_member(
        &self,
        id: MemberId,
        peer_urls: Vec<String>,
    ) -> Result<Vec<MemberStatus>, ReplicaError> {
        self.change(MembershipChange::Update { id, peer_urls })
            .await
    }

    /// Records this member's name and client URLs in the membership, unless already there.
    pub async fn publish(
        &self,
        name: String,
        client_urls: Vec<String>,
    ) -> Result<(), ReplicaError> {
        let known = self.members().into_iter().find(|m| m.id == self.id);
        if known.is_some_and(|m| m.member.name == name && m.member.client_urls == client_urls) {
            return Ok(());
        }
        self.change(MembershipChange::Publish {
            id: self.id,
            name,
            client_urls,
        })
        .await
        .map(|_| ())
    }

    async fn change(&self, change: MembershipChange) -> Result<Vec<MemberStatus>, ReplicaError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let leader = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                metrics.current_leader.and_then(|id| {
                    metrics
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .cloned()
                        .map(|m| (id, m))
                })
            };
            match leader {
                Some((leader, _)) if leader == self.id => return self.leader_change(&change).await,
                Some((leader, member)) => {
                    let Some(leader) = peer_address(leader, &member) else {
                        return Err(ReplicaError::NoLeader);
                    };
                    let answer: Result<Vec<MemberStatus>, ReplicaError> = self
                        .peers
                        .call(
                            &leader,
                            PeerCall::ChangeMembers,
                            &change,
                            deadline
                                .saturating_duration_since(Instant::now())
                                .max(RETRY_PAUSE),
                        )
                        .await
                        .map_err(|error| match error {
                            CallError::NotAccepted { reason, .. } => {
                                ReplicaError::NotAccepted(reason)
                            }
                            error => ReplicaError::Timeout(error.to_string()),
                        })?;
                    match answer {
                        Err(ReplicaError::NoLeader) => {}
                        other => return other,
                    }
                }
                None => {}
            }
            pause_or_give_up(deadline).await?;
        }
    }

    /// As leader, carries out a membership change.
    pub(crate) async fn leader_change(
        &self,
        change: &MembershipChange,
    ) -> Result<Vec<MemberStatus>, ReplicaError> {
        let (current, replication, last_log_index) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.state != ServerState::Leader {
                return Err(ReplicaError::NoLeader);
            }
            (
                members_of(metrics.membership_config.membership()),
                metrics.replication.clone().unwrap_or_default(),
                metrics.last_log_index.unwrap_or(0),
            )
        };
        let find = |id: MemberId| {
            current
                .iter()
                .find(|m| m.id == id)
                .cloned()
                .ok_or(ReplicaError::MemberNotFound(id))
        };
        let changes: Vec<ChangeMembers<MemberId, Member>> = match change {
            MembershipChange::Add {
                id,
                member,
                learner,
            } => {
                let taken = current.iter().any(|m| {
                    m.member
                        .peer_urls
                        .iter()
                        .any(|url| member.peer_urls.contains(url))
                });
                if taken {
                    return Err(ReplicaError::PeerUrlExists);
                }
                let mut add = vec![ChangeMembers::AddNodes(BTreeMap::from([(
                    *id,
                    member.clone(),
                )]))];
                if !learner {
                    add.push(ChangeMembers::AddVoterIds(BTreeSet::from([*id])));
                }
                add
            }
            MembershipChange::Remove { id } => {
                let removed = find(*id)?;
                if removed.is_learner {
                    vec![ChangeMembers::RemoveNodes(BTreeSet::from([*id]))]
                } else {
                    let voters = current.iter().filter(|m| !m.is_learner).count();
                    if voters == 1 {
                        return Err(ReplicaError::Unhealthy);
                    }
                    vec![ChangeMembers::RemoveVoters(BTreeSet::from([*id]))]
                }
            }
            MembershipChange::Promote { id } => {
                let promoted = find(*id)?;
                if !promoted.is_learner {
                    return Err(ReplicaError::NotLearner(*id));
                }
                // etcd's rule: a learner may be promoted once it holds 90% of the leader's log.
                let matched = replication
                    .get(id)
                    .copied()
                    .flatten()
                    .map_or(0, |log| log.index);
                if matched * 10 < last_log_index * 9 {
                    return Err(ReplicaError::LearnerNotReady(*id));
                }
                vec![ChangeMembers::AddVoterIds(BTreeSet::from([*id]))]
            }
            MembershipChange::Update { id, peer_urls } => {
                let mut member = find(*id)?.member;
                member.peer_urls = peer_urls.clone();
                vec![ChangeMembers::SetNodes(BTreeMap::from([(*id, member)]))]
            }
            MembershipChange::Publish {
                id,
                name,
                client_urls,
            } => {
                let mut member = find(*id)?.member;
                member.name = name.clone();
                member.client_urls = client_urls.clone();
                vec![ChangeMembers::SetNodes(BTreeMap::from([(*id, member)]))]
            }
        };
        let mut members = current;
        for change in changes {
            let truncations = self.proposer.truncations.count();
            let changed =
                tokio::time::timeout(LEADER_WAIT, self.raft.change_membership(change, false))
                    .await
                    .map_err(|_| {
                        ReplicaError::Timeout(
                            "the membership change was not committed in time".into(),
                        )
                    })?
                    .map_err(|error| match error {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(_))
                            if self.proposer.truncations.count() != truncations =>
                        {
                            dropped_from_log("membership change")
                        }
                        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                            ReplicaError::NoLeader
                        }
                        RaftError::APIError(error) => ReplicaError::Refused(error.to_string()),
                        RaftError::Fatal(_) => ReplicaError::Stopped,
                    })?;
            if let Some(membership) = changed.membership {
                members = members_of(&membership);
            }
        }
        Ok(members)
    }
}

fn members_of(membership: &openraft::Membership<MemberId, Member>) -> Vec<MemberStatus> {
    let voters: BTreeSet<MemberId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, member)| MemberStatus {
            id: *id,
            member: member.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

/// The leader this member's Raft knows of, when that is another member: a write or a
/// linearizable read goes to it directly, rather than first to this member's Raft core to be
/// refused. Should that member have stopped leading meanwhile, it refuses, and the request
/// waits to learn of the next leader as it would after a refusal here.
pub(crate) fn leader_elsewhere(raft: &Raft) -> Option<ForwardToLeader<MemberId, Member>> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let leader = metrics
        .current_leader
        .filter(|leader| *leader != metrics.id)?;
    let node = metrics.membership_config.membership().get_node(&leader)?;
    Some(ForwardToLeader::new(leader, node.clone()))
}

pub(crate) fn leader_address(leader: &ForwardToLeader<MemberId, Member>) -> Option<PeerAddress> {
    peer_address(leader.leader_id?, leader.leader_node.as_ref()?)
}

/// The error for a proposal openraft refused after the log was truncated. openraft 0.9 refuses
/// with `ForwardToLeader` both a proposal it never appended and one it appended and then dropped
/// on stepping down; the latter may live on in another member's log and commit there, so it must
/// not be proposed again, and its outcome is unknown.
pub(crate) fn dropped_from_log(what: &str) -> ReplicaError {
    ReplicaError::Timeout(format!(
        "leadership moved while the {what} was in the log; it may still be applied"
    ))
}

pub(crate) async fn pause_or_give_up(deadline: Instant) -> Result<(), ReplicaError> {
    if Instant::now() + RETRY_PAUSE > deadline {
        return Err(ReplicaError::NoLeader);
    }
    tokio::time::sleep(RETRY_PAUSE).await;
    Ok(())
}

pub(crate) enum ReadIndexError {
    NotLeader(ForwardToLeader<MemberId, Member>),
    Failed(ReplicaError),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] crate::state_machine::OpenError),
    #[error("opening the Raft log: {0}")]
    Log(#[from] crate::types::StorageError),
    #[error("Raft configuration: {0}")]
    Config(String),
    #[error("starting Raft: {0}")]
    Raft(String),
}
