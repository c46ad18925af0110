//! The types openraft is instantiated with, and the member record it replicates.

use std::fmt;
use std::sync::Arc;

use cairn_kernel::{Command, CommandResponse, Event, KvError, Revision};
use serde::{Deserialize, Serialize};

use crate::answer_slot::AnswerSlot;

/// A member's ID: etcd's member ID, used as the Raft node ID.
pub type MemberId = u64;

/// What the cluster knows of a member, replicated in every membership entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Empty until the member has started and published it.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has started and published them.
    pub client_urls: Vec<String>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_urls.join(","))
    }
}

/// The client writes one log entry carries, applied in order, each with its own outcome: the
/// writes that queued on one member while its previous entry was being committed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Batch {
    /// The leader's wall clock when it appended the entry, in ms since the Unix epoch: the one
    /// clock plugin calls may read, so every replica reads the same. Zero until the leader
    /// stamps it.
    pub time_ms: u64,
    /// Shared, so that a batch kept for a retry, or an entry the log keeps and hands to
    /// replication, costs no copy of its commands.
    pub commands: Arc<Vec<Command>>,
    /// Where the proposer waits for the outcomes, on the member that proposed the batch and only
    /// in its memory (see `answer_slot`).
    #[serde(skip)]
    pub(crate) answer: Option<AnswerSlot>,
}

impl Batch {
    pub fn new(commands: Vec<Command>) -> Batch {
        Batch {
            time_ms: 0,
            commands: Arc::new(commands),
            answer: None,
        }
    }
}

/// The outcomes of applying one log entry, the same on every replica: one per command of its
/// batch, and none for entries that carry no commands (membership changes, a new leader's blank
/// entry). openraft is handed none for a batch whose outcomes went to its proposer's slot.
pub type Applied = Vec<Result<CommandResponse, KvError>>;

/// What applying log entries changed, as a member announces it to its watchers: the events of
/// revisions `first_revision..=revision`, in order. After a snapshot install the events are
/// missing (`first_revision` is past `revision`): whoever needs them reads them from history.
#[derive(Debug)]
pub struct AppliedEvents {
    pub first_revision: Revision,
    pub revision: Revision,
    pub events: Vec<Event>,
}

openraft::declare_raft_types!(
    /// Cairn's Raft: kernel commands in, kernel responses out, members as nodes, snapshots as
    /// files.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = MemberId,
        Node = Member,
        SnapshotData = SnapshotFile,
);

/// A snapshot while it is sent or received: a file on disk, never the whole state in memory.
pub type SnapshotFile = tokio::fs::File;

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<MemberId>;
pub type Vote = openraft::Vote<MemberId>;
pub type StoredMembership = openraft::StoredMembership<MemberId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<MemberId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<MemberId>;
