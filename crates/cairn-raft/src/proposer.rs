//! The write path: client writes batched into log entries and proposed on whichever member leads.
//!
//! Writes queue on the member that received them. One task takes everything queued (up to
//! [`BATCH_COMMANDS_MAX`] commands or [`BATCH_BYTES_MAX`] bytes) as one [`Batch`], the payload of
//! one log entry, and proposes it: to the local Raft if this member leads, or forwarded whole to
//! the leader. Up to [`BATCHES_IN_FLIGHT_MAX`] entries are in flight at once; while they commit
//! the next batch fills up, so under load one round of replication and one fsync serve many
//! writes, as etcd's proposal batching does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_kernel::{Command, CommandResponse, KvError};
use openraft::ServerState;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::answer_slot::AnswerSlot;
use crate::applied::AppliedLog;
use crate::codec;
use crate::log_store::{InPlaceSync, Truncations};
use crate::network::{CallError, PeerCall, Peers};
use crate::replica::{
    LEADER_WAIT, ReplicaError, dropped_from_log, leader_address, leader_elsewhere, pause_or_give_up,
};
use crate::types::{Applied, Batch, Member, MemberId, Raft};

/// Most commands in one log entry.
const BATCH_COMMANDS_MAX: usize = 1024;
/// Most encoded command bytes in one log entry (a single larger command still gets its own).
const BATCH_BYTES_MAX: usize = 4 << 20;
/// Batches proposed and not yet applied at once. More than one lets a write that arrives while
/// an entry commits go out at once, in the next entry, instead of waiting for the commit: a lock
/// handed over, say, waits for one commit rather than two. The log's group commit still syncs
/// the entries that arrive together with one fsync. Writes in flight together have no order
/// among them, as concurrent writes never do; each still takes effect between its request and
/// its response.
const BATCHES_IN_FLIGHT_MAX: usize = 4;
/// Writes waiting for a batch; past this, writers wait (backpressure).
const QUEUE_COMMANDS_MAX: usize = 4096;

/// A command's outcome once applied: its response, or the kernel's refusal.
pub type Outcome = Result<CommandResponse, KvError>;

/// What one write comes to: its outcome once applied, or why it was not.
pub(crate) type Answer = Result<Outcome, ReplicaError>;

/// The leader's answers to a batch a follower forwarded, and how far the leader had applied its
/// log when it gave them: at least through every write it applied.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Forwarded {
    pub(crate) answers: Vec<Answer>,
    pub(crate) applied: u64,
}

/// A write waiting for its batch.
pub(crate) struct Queued {
    command: Command,
    bytes: usize,
    reply: oneshot::Sender<Answer>,
    /// Sent here by a follower that took this member for the leader. Such a write is proposed
    /// here or handed back untried, never forwarded again: two members that each held the
    /// other's writes while leadership moved between them would otherwise wait on each other.
    forwarded: bool,
}

impl Queued {
    /// A write a client sent to this member.
    pub(crate) fn new(command: Command, reply: oneshot::Sender<Answer>) -> Queued {
        Queued {
            bytes: codec::encoded_len(&command),
            command,
            reply,
            forwarded: false,
        }
    }

    /// A write a follower forwarded to this member as leader.
    pub(crate) fn forwarded(command: Command, reply: oneshot::Sender<Answer>) -> Queued {
        Queued {
            forwarded: true,
            ..Queued::new(command, reply)
        }
    }
}

/// Proposes batches, locally or through the leader.
#[derive(Clone)]
pub(crate) struct Proposer {
    raft: Raft,
    peers: Peers,
    /// Tells a write refused before it reached the log from one dropped from it.
    pub(crate) truncations: Truncations,
    /// How long a leader may go without hearing from a quorum before it stops acting as leader.
    pub(crate) quorum_contact_max: Duration,
    applied: AppliedLog,
    in_place_sync: InPlaceSync,
}

enum ProposeError {
    /// This member refused the batch before appending it: it may be proposed anywhere.
    NotLeader(ForwardToLeader<MemberId, Member>),
    Failed(ReplicaError),
}

impl Proposer {
    pub(crate) fn new(
        raft: Raft,
        peers: Peers,
        truncations: Truncations,
        quorum_contact_max: Duration,
        applied: AppliedLog,
        in_place_sync: InPlaceSync,
    ) -> Proposer {
        Proposer {
            raft,
            peers,
            truncations,
            quorum_contact_max,
            applied,
            in_place_sync,
        }
    }

    /// Starts the batching task; it ends once every sender of the returned queue is dropped.
    pub(crate) fn start_batching(&self) -> mpsc::Sender<Queued> {
        let (queue, queued) = mpsc::channel(QUEUE_COMMANDS_MAX);
        tokio::spawn(self.clone().propose_batches(queued));
        queue
    }

    async fn propose_batches(self, mut queued: mpsc::Receiver<Queued>) {
        let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX));
        let mut carried: Option<Queued> = None;
        loop {
            // A slot first: while every slot is busy, writes queue up and go out together.
            let slot = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let first = match carried.take() {
                Some(write) => write,
                None => match queued.recv().await {
                    Some(write) => write,
                    None => return,
                },
            };
            let mut bytes = first.bytes;
            let mut batch = vec![first];
            while batch.len() < BATCH_COMMANDS_MAX {
                match queued.try_recv() {
                    Ok(next) if bytes + next.bytes > BATCH_BYTES_MAX => {
                        carried = Some(next);
                        break;
                    }
                    Ok(next) => {
                        bytes += next.bytes;
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            let alone = in_flight.available_permits() == BATCHES_IN_FLIGHT_MAX - 1;
            let proposer = self.clone();
            tokio::spawn(async move {
                proposer.write_and_reply(batch, alone).await;
                drop(slot);
            });
        }
    }

    /// Writes one batch, `alone` if no other batch was in flight when it was formed, and hands
    /// each writer its answer.
    async fn write_and_reply(&self, batch: Vec<Queued>, alone: bool) {
        let (forwarded, local): (Vec<Queued>, Vec<Queued>) =
            batch.into_iter().partition(|write| write.forwarded);
        let local = if forwarded.is_empty() {
            local
        } else {
            self.propose_forwarded(forwarded, local).await
        };
        if local.is_empty() {
            return;
        }
        let (commands, replies): (Vec<Command>, Vec<_>) = local
            .into_iter()
            .map(|write| (write.command, write.reply))
            .unzip();
        reply(replies, self.write(Batch::new(commands), alone).await);
    }

    /// Proposes forwarded writes here, together with the local ones, if this member leads.
    /// Otherwise hands the forwarded ones back untried, and returns the local ones still to be
    /// written through whichever member leads.
    async fn propose_forwarded(&self, forwarded: Vec<Queued>, local: Vec<Queued>) -> Vec<Queued> {
        if !self.leads() {
            // Never appended: the follower may send these elsewhere.
            let replies = forwarded.into_iter().map(|write| write.reply).collect();
            reply(replies, Err(ReplicaError::NoLeader));
            return local;
        }
        let forwarded_count = forwarded.len();
        let (commands, replies): (Vec<Command>, Vec<_>) = forwarded
            .into_iter()
            .chain(local)
            .map(|write| (write.command, write.reply))
            .unzip();
        let batch = Batch::new(commands);
        let answers = match self
            .propose(batch.clone(), Instant::now() + LEADER_WAIT, false)
            .await
        {
            Ok(outcomes) => Ok(outcomes.into_iter().map(Ok).collect()),
            Err(ProposeError::Failed(error)) => Err(error),
            Err(ProposeError::NotLeader(_)) => {
                // Never appended: the forwarded writes go back untried, and the local ones are
                // written through whichever member leads now.
                let mut replies = replies.into_iter();
                reply(
                    replies.by_ref().take(forwarded_count).collect(),
                    Err(ReplicaError::NoLeader),
                );
                return Arc::unwrap_or_clone(batch.commands)
                    .split_off(forwarded_count)
                    .into_iter()
                    .zip(replies)
                    .map(|(command, reply)| Queued::new(command, reply))
                    .collect();
            }
        };
        reply(replies, answers);
        Vec::new()
    }

    /// Whether this member is a leader cut off from a quorum for longer than an election timeout:
    /// by then the others may have elected a new leader.
    ///
    /// etcd's CheckQuorum makes such a leader step down; openraft 0.9 keeps it in the leader role
    /// until it hears of a higher term, accepting writes that can never commit. So Cairn stops
    /// acting on the role instead: it reports no leader and refuses writes until it hears from a
    /// quorum again or learns of the new leader. Linearizable reads need no such check: each one
    /// confirms leadership with a quorum.
    pub(crate) fn lost_quorum(&self, metrics: &openraft::RaftMetrics<MemberId, Member>) -> bool {
        metrics.state == ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| Duration::from_millis(ms) > self.quorum_contact_max)
    }

    /// Applies `batch` through the log, on whichever member leads, and returns each write's
    /// answer; `alone` if no other batch was in flight when it was formed.
    async fn write(&self, batch: Batch, alone: bool) -> Result<Vec<Answer>, ReplicaError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            if !self.lost_quorum(&self.raft.metrics().borrow()) {
                // A follower that knows the leader forwards at once: openraft would only refuse
                // the proposal, after a round trip to its core.
                let leader = match leader_elsewhere(&self.raft) {
                    Some(leader) => leader,
                    None => match self.propose(batch.clone(), deadline, alone).await {
                        Ok(outcomes) => return Ok(outcomes.into_iter().map(Ok).collect()),
                        Err(ProposeError::Failed(error)) => return Err(error),
                        Err(ProposeError::NotLeader(leader)) => leader,
                    },
                };
                if let Some(leader) = leader_address(&leader) {
                    let forwarded = self
                        .peers
                        .call::<_, Result<Forwarded, ReplicaError>>(
                            &leader,
                            PeerCall::Forward,
                            &batch,
                            deadline
                                .saturating_duration_since(Instant::now())
                                .max(Duration::from_millis(50)),
                        )
                        .await;
                    match forwarded {
                        // As in etcd, a write is answered only once the member that took it has
                        // applied it, so that member's own reads after the answer see it.
                        Ok(Ok(forwarded)) => {
                            self.applied.reaching(forwarded.applied, deadline).await?;
                            return Ok(forwarded.answers);
                        }
                        // That member no longer leads, so it did not apply the batch: try again.
                        Ok(Err(ReplicaError::NoLeader)) => {}
                        Ok(Err(error)) => return Err(error),
                        // The leader this member knows of is down and never saw the batch:
                        // wait to learn of its successor.
                        Err(CallError::Refused { .. }) => {}
                        // Refused before it was read: it was never proposed.
                        Err(CallError::NotAccepted { reason, .. }) => {
                            return Err(ReplicaError::NotAccepted(reason));
                        }
                        Err(error) => return Err(ReplicaError::Timeout(error.to_string())),
                    }
                }
            }
            pause_or_give_up(deadline).await?;
        }
    }

    /// Whether this member is the only voter of its cluster.
    fn only_voter(&self) -> bool {
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow();
        let mut voters = metrics.membership_config.membership().voter_ids();
        voters.next() == Some(metrics.id) && voters.next().is_none()
    }

    /// Whether this member leads and has heard from a quorum lately.
    pub(crate) fn leads(&self) -> bool {
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow();
        metrics.state == ServerState::Leader
            && metrics.current_leader == Some(metrics.id)
            && !self.lost_quorum(&metrics)
    }

    /// Appends `batch` to the log if this member leads, and waits until `deadline` for it to be
    /// committed and applied. A batch proposed `alone` by the only voter is synced in place.
    async fn propose(
        &self,
        mut batch: Batch,
        deadline: Instant,
        alone: bool,
    ) -> Result<Vec<Outcome>, ProposeError> {
        let commands = batch.commands.len();
        let truncations = self.truncations.count();
        batch.time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        self.in_place_sync.set(alone && self.only_voter());
        let proposed = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            answered_or_written(&self.raft, batch),
        )
        .await;
        // Whatever the outcome, this batch's append is over: entries proposed otherwise (a
        // membership change, a new term's blank entry) go through the flusher.
        self.in_place_sync.set(false);
        let proposed = proposed.map_err(|_| {
            ProposeError::Failed(ReplicaError::Timeout(
                "the write was not committed in time; it may still be applied".into(),
            ))
        })?;
        match proposed {
            Ok(outcomes) => {
                assert_eq!(outcomes.len(), commands, "one outcome per command");
                Ok(outcomes)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))
                if self.truncations.count() != truncations =>
            {
                Err(ProposeError::Failed(dropped_from_log("write")))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(leader))) => {
                Err(ProposeError::NotLeader(leader))
            }
            Err(RaftError::APIError(error)) => Err(ProposeError::Failed(ReplicaError::Refused(
                error.to_string(),
            ))),
            Err(RaftError::Fatal(_)) => Err(ProposeError::Failed(ReplicaError::Stopped)),
        }
    }
}

/// Proposes `batch` and returns its outcomes as soon as the state machine puts them in the
/// batch's slot, or as openraft answers if it never does (the entry was not applied here).
async fn answered_or_written(
    raft: &Raft,
    mut batch: Batch,
) -> Result<Applied, RaftError<MemberId, ClientWriteError<MemberId, Member>>> {
    // An empty answer from openraft means the slot has the outcomes, so a batch must hold some.
    assert!(
        !batch.commands.is_empty(),
        "a batch holds at least one write"
    );
    let (slot, mut answered) = AnswerSlot::new();
    batch.answer = Some(slot);
    let raft = raft.clone();
    let mut written = Box::pin(async move { raft.client_write(batch).await });
    tokio::select! {
        Ok(outcomes) = &mut answered => {
            // openraft's own answer follows. Awaited elsewhere, it finds its caller still there:
            // openraft warns of every answer it cannot deliver.
            tokio::spawn(written);
            Ok(outcomes)
        }
        written = &mut written => {
            let written = written?;
            if written.data.is_empty() {
                // The state machine filled the slot before it answered openraft, so both were
                // ready and the outcomes are in the slot.
                Ok(answered
                    .await
                    .expect("the state machine filled the slot when it gave openraft no outcomes"))
            } else {
                Ok(written.data)
            }
        }
    }
}

/// Hands each writer of a batch its answer: one per write, or one error for all.
fn reply(replies: Vec<oneshot::Sender<Answer>>, answers: Result<Vec<Answer>, ReplicaError>) {
    match answers {
        Ok(answers) => {
            assert_eq!(answers.len(), replies.len(), "one answer per write");
            for (reply, answer) in replies.into_iter().zip(answers) {
                // A writer that gave up no longer waits; its write stands.
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
