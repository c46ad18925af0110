//! The Raft log in RocksDB, with group commit on the leader.
//!
//! Entries are written to RocksDB as soon as openraft hands them over, so they are readable at
//! once (the leader replicates from them). Each sync publishes the id of the last entry it
//! covered ([`SyncedLog`]); the published id only rises, and every entry the log holds with an
//! id at most that high is on disk.
//!
//! When this member appends as a follower, it syncs in place and reports the entries flushed
//! after: a follower's acknowledgement counts towards a quorum, so it must promise a copy on
//! disk. openraft 0.9's core waits for each append's report before it does anything else, so
//! a follower never has two appends pending that one sync could share. The sync runs on the
//! core's own thread and blocks it for the sync's duration (a few hundred microseconds): the core
//! has nothing else to do meanwhile, and the runtime's other workers take over the tasks queued
//! on this one. A hand-off to a flusher thread and back, or `block_in_place` handing this
//! worker's queue to another thread and taking it back, costs more thread wake-ups than the wait
//! (measured on three members: without `block_in_place`, a single put took 8% less time and 256
//! clients put 15% more per second).
//!
//! When it appends its own entries as leader, it reports them flushed at once and leaves the
//! sync to a flusher thread, which syncs once for everything appended meanwhile. Were the
//! leader to wait for its sync, openraft would replicate only after it, putting the leader's
//! fsync and the followers' one after the other; this way they run together, as Raft allows
//! (thesis §10.2.1), and the core appends the next entry while the sync runs. The leader's own
//! copy must still be on disk before an entry commits, so gates take over what the early report
//! gives up: the leader passes a follower's answer to openraft only once its own sync covers
//! what it sent, so any quorum of two or more members counts the leader's copy only when it is
//! on disk, and sends a commit index only once its sync covers it (`network.rs`); and no member
//! applies an entry before its sync covers it (`state_machine.rs`), which holds a leader that is
//! the only voter, whose own report alone commits.
//!
//! Except when it is the only voter and proposes a batch of writes with no other in flight
//! ([`InPlaceSync`]): then it syncs in place, as a follower does. Nothing could share the
//! flusher's sync, and handing the entry to the flusher's thread and waiting for it to wake the
//! state machine costs two thread wake-ups per write (on one member, a single client's put took
//! about 10% less time in place). With more writes in flight the flusher's shared sync wins (64
//! clients put 25% less per second when every append synced in place), and with other voters the
//! leader should send its entries before it syncs them, or its fsync and theirs would run one
//! after the other.
//!
//! The commit index openraft reports is only a hint, which lets a restarted member apply what it
//! knows committed before it hears from a leader. It is written with the log's next write (an
//! append, a vote, a truncation or a purge) rather than on its own, which would put a RocksDB
//! write on the path from each commit to its apply on every member; the next append's sync would
//! be the first to make it durable anyway.
//!
//! The vote is written synced: it must be on disk before this member answers a vote request.
//! That sync also covers every entry written before it, which is how entries a leader reported
//! early and had not yet synced when it stepped down reach the disk before this member, now
//! following another leader, acknowledges anything.
//! Truncation and purging need no sync of their own. RocksDB's write-ahead log is sequential, so
//! the sync that makes the entries replacing a truncated suffix durable makes the truncation
//! durable too, before those entries are reported flushed; and a purge lost in a crash only
//! leaves entries the snapshot already covers. A truncation can leave the published id above
//! the log's new end; the entries a follower appends next are synced before they are reported,
//! and a leader's own entries carry a newer term than any id published before them.

#![allow(
    clippy::result_large_err,
    reason = "openraft's storage traits return its large StorageError; the helpers feeding them return the same"
)]

use std::ops::{Bound, RangeBounds};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

use tokio::sync::watch;

use crate::codec;
use crate::log_tail::LogTail;
use crate::synced::SyncedLog;
use crate::types::{Entry, LogId, MemberId, StorageError, TypeConfig, Vote};

const LOG: &str = "log";
const STATE: &str = "state";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// How many retired write-ahead files RocksDB keeps to write over. A sync that only overwrites
/// blocks already in the file has no file size to commit to the filesystem's journal; on ext4
/// here `fdatasync` after a 200-byte write took 110 to 130 µs inside a file against 190 to 250 µs
/// at its end (etcd preallocates its WAL segments for the same reason). Every append is synced by
/// a quorum before it commits, so this is on the path of every write.
const RECYCLED_WAL_FILES: usize = 4;

/// The log's memtable size, and so about how large each write-ahead file grows before it is
/// retired and recycled. RocksDB recycles only files retired since the database opened, so syncs
/// are the cheap kind once about twice this much has been written; smaller files get there
/// sooner, at the cost of more, smaller flushes of log entries to SST files.
const WAL_FILE_BYTES: usize = 8 << 20;

/// The log store; clones share one database and one flusher.
#[derive(Clone)]
pub struct LogStore {
    // Declared before `db`, so the flusher thread has let go of the database before this
    // store's handle to it drops: the last store to go closes the database on its own thread,
    // never on a detached one that a process exit could cut short mid-close.
    flusher: Arc<Flusher>,
    db: Arc<DB>,
    /// This member, to tell its own entries as leader from a leader's entries it follows.
    id: MemberId,
    /// The vote last saved, which names the leader whose entries are being appended.
    vote: Arc<Mutex<Option<Vote>>>,
    /// The commit index reported since the last write, to go with the next one.
    unsaved_committed: Arc<Mutex<Option<Option<LogId>>>>,
    synced: Arc<watch::Sender<Option<LogId>>>,
    /// The newest entries, decoded, for replication to read.
    tail: Arc<Mutex<LogTail>>,
    truncations: Truncations,
    in_place_sync: InPlaceSync,
}

/// Whether this member's appends as leader sync in place instead of through the flusher: set by
/// the proposer for the append of a batch it proposes as the only voter with no other batch in
/// flight, and cleared once that proposal ends. Only a hint for speed, which a concurrent
/// proposal may overwrite: syncing in place is always safe, and the flusher's sync is safe for a
/// leader under the gates described above.
#[derive(Clone, Default)]
pub(crate) struct InPlaceSync(Arc<AtomicBool>);

impl InPlaceSync {
    pub(crate) fn set(&self, in_place: bool) {
        self.0.store(in_place, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How many times the log has dropped entries from its end. openraft 0.9 answers a write
/// `ForwardToLeader` both when it refuses it before appending and when it appended it and then
/// dropped it on stepping down; only the second can come with a truncation, and the dropped
/// entry may live on in another member's log and commit there.
#[derive(Clone, Default)]
pub(crate) struct Truncations(Arc<AtomicU64>);

impl Truncations {
    pub(crate) fn count(&self) -> u64 {
        // Orders with the truncation it counts: the store counts before openraft tells the
        // writers of dropped entries, and they read after hearing.
        self.0.load(Ordering::SeqCst)
    }

    fn record(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The flusher thread and the queue of the leader's appends waiting for it, each by its last
/// entry; dropping it stops and joins the thread.
struct Flusher {
    appended: Option<mpsc::Sender<LogId>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop.
        drop(self.appended.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LogStore {
    /// Opens (or creates) the log of member `id` in `dir` and starts its flusher thread, which
    /// ends once every clone of the store is dropped.
    pub fn open(dir: &Path, id: MemberId) -> Result<LogStore, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_recycle_log_file_num(RECYCLED_WAL_FILES);
        // Flushing both families together lets a write-ahead file go, to be recycled, as soon
        // as the log's memtable is flushed; the state family, written with every append, would
        // otherwise hold each file until the total WAL size forced its own flush.
        options.set_atomic_flush(true);
        let families = [LOG, STATE].map(|name| {
            let mut family = Options::default();
            family.set_write_buffer_size(WAL_FILE_BYTES);
            ColumnFamilyDescriptor::new(name, family)
        });
        let db = Arc::new(
            DB::open_cf_descriptors(&options, dir, families)
                .map_err(|e| StorageIOError::read_logs(&e))?,
        );
        // Whatever the log held at open survived the last run; sync it before vouching for it.
        db.flush_wal(true)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let last = last_entry_id(&db)?.or(read_state(&db, LAST_PURGED)?);
        let synced = Arc::new(watch::Sender::new(last));
        let (appended, flushes) = mpsc::channel();
        let (flushing_db, flushing_synced) = (db.clone(), synced.clone());
        let thread = std::thread::Builder::new()
            .name("cairn-log-flush".into())
            .spawn(move || {
                // A flusher gone quietly would leave the leader's appends unsynced for good, its
                // writes waiting until they time out: a panic stops the process, as a failed sync
                // does.
                let flushed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    flush_loop(&flushing_db, &flushes, &flushing_synced)
                }));
                if flushed.is_err() {
                    tracing::error!("the Raft log's flusher panicked; stopping");
                    std::process::abort();
                }
            })
            .expect("spawning the log flusher thread");
        let flusher = Arc::new(Flusher {
            appended: Some(appended),
            thread: Some(thread),
        });
        Ok(LogStore {
            flusher,
            db,
            id,
            vote: Arc::default(),
            unsaved_committed: Arc::default(),
            synced,
            tail: Arc::default(),
            truncations: Truncations::default(),
            in_place_sync: InPlaceSync::default(),
        })
    }

    /// How many times the log has been truncated, counted from this open.
    pub(crate) fn truncations(&self) -> Truncations {
        self.truncations.clone()
    }

    /// The switch between syncing a leader's appends in place and through the flusher.
    pub(crate) fn in_place_sync(&self) -> InPlaceSync {
        self.in_place_sync.clone()
    }

    /// How far the log is on disk.
    pub(crate) fn synced(&self) -> SyncedLog {
        SyncedLog::new(self.synced.subscribe())
    }

    fn family(&self, name: &str) -> &rocksdb::ColumnFamily {
        family(&self.db, name)
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, LogTail> {
        self.tail.lock().expect("log tail poisoned")
    }

    /// Writes `batch`, with the commit index reported since the last write.
    fn write(&self, mut batch: WriteBatch, sync: bool) -> Result<(), rocksdb::Error> {
        let mut unsaved = self.unsaved_committed();
        if let Some(committed) = *unsaved {
            batch.put_cf(self.family(STATE), COMMITTED, codec::encode(&committed));
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options)?;
        *unsaved = None;
        Ok(())
    }

    fn unsaved_committed(&self) -> std::sync::MutexGuard<'_, Option<Option<LogId>>> {
        self.unsaved_committed
            .lock()
            .expect("unsaved commit index poisoned")
    }
}

/// Whether member `id`, having saved `vote`, appends `entries` as their leader. openraft saves
/// a follower's vote for its leader before appending that leader's entries, so entries of this
/// member's own term are only ever appended here while it leads that term.
fn appends_as_leader(id: MemberId, vote: Option<Vote>, entries: &[Entry]) -> bool {
    vote.is_some_and(|vote| {
        vote.leader_id.node_id == id
            && entries
                .iter()
                .all(|entry| entry.log_id.leader_id == vote.leader_id)
    })
}

fn family<'db>(db: &'db DB, name: &str) -> &'db rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("column families are created at open")
}

fn read_state<T: serde::de::DeserializeOwned>(
    db: &DB,
    name: &[u8],
) -> Result<Option<T>, StorageError> {
    let bytes = db
        .get_cf(family(db, STATE), name)
        .map_err(|e| StorageIOError::read(&e))?;
    bytes
        .map(|bytes| codec::decode(&bytes).map_err(|e| StorageIOError::read(&e).into()))
        .transpose()
}

/// The id of the last entry in the log, if any.
fn last_entry_id(db: &DB) -> Result<Option<LogId>, StorageError> {
    let mut last = db.iterator_cf(family(db, LOG), IteratorMode::End);
    match last.next() {
        None => Ok(None),
        Some(item) => {
            let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let entry: Entry = codec::decode(&value).map_err(|e| StorageIOError::read_logs(&e))?;
            Ok(Some(entry.log_id))
        }
    }
}

/// Syncs the write-ahead log once for every leader append that queued up meanwhile and publishes
/// how far that sync reached.
fn flush_loop(db: &DB, flushes: &mpsc::Receiver<LogId>, synced: &watch::Sender<Option<LogId>>) {
    while let Ok(mut last) = flushes.recv() {
        if let Some(later) = flushes.try_iter().last() {
            last = later;
        }
        if let Err(error) = db.flush_wal(true) {
            // The leader has already reported these entries written and may have sent them; it
            // cannot take that back, nor know what the failed sync left on disk.
            tracing::error!(%error, "syncing the Raft log failed after this leader reported its entries written; stopping");
            std::process::abort();
        }
        publish(synced, last);
    }
}

/// Publishes that a sync covered `last`, unless an earlier report already reached further.
fn publish(synced: &watch::Sender<Option<LogId>>, last: LogId) {
    synced.send_if_modified(|published| {
        let higher = *published < Some(last);
        if higher {
            *published = Some(last);
        }
        higher
    });
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index + 1,
            Bound::Unbounded => 0,
        };
        if let Some(entries) = self.tail().read(start, &range) {
            return Ok(entries);
        }
        let mut entries = Vec::new();
        let iterator = self.db.iterator_cf(
            self.family(LOG),
            IteratorMode::From(&index_key(start), Direction::Forward),
        );
        for item in iterator {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                StorageIOError::read_logs(&std::io::Error::other("log key is not 8 bytes"))
            })?);
            if !range.contains(&index) {
                break;
            }
            entries.push(
                codec::decode(&value).map_err(|e| StorageIOError::read_log_at_index(index, &e))?,
            );
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = read_state(&self.db, LAST_PURGED)?;
        let last_log_id = last_entry_id(&self.db)?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.family(STATE), VOTE, codec::encode(vote));
        self.write(batch, true)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        *self.vote.lock().expect("vote cache poisoned") = Some(*vote);
        Ok(())
    }

    /// The vote saved last, except that a leadership of this member's own comes back as a bare
    /// candidacy for its term. openraft 0.9 would otherwise resume leading that term at once,
    /// appending after whatever its log kept; as a leader sends its entries before they are
    /// synced, a peer may hold entries that an unclean stop dropped from this log, and reusing
    /// their ids for new entries would leave the two logs different under equal ids. Starting
    /// over in a new term gives new entries ids of their own.
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote = read_state(&self.db, VOTE)?.map(|vote: Vote| {
            if vote.committed && vote.leader_id.node_id == self.id {
                Vote::new(vote.leader_id.term, self.id)
            } else {
                vote
            }
        });
        *self.vote.lock().expect("vote cache poisoned") = vote;
        Ok(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *self.unsaved_committed() = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(committed) = *self.unsaved_committed() {
            return Ok(committed);
        }
        Ok(read_state::<Option<LogId>>(&self.db, COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let last = entries
            .last()
            .expect("openraft appends at least one entry")
            .log_id;
        let mut batch = WriteBatch::default();
        let mut sizes = Vec::with_capacity(entries.len());
        for entry in &entries {
            let encoded = codec::encode(entry);
            sizes.push(encoded.len());
            batch.put_cf(self.family(LOG), index_key(entry.log_id.index), encoded);
        }
        let vote = *self.vote.lock().expect("vote cache poisoned");
        if !appends_as_leader(self.id, vote, &entries) || self.in_place_sync.get() {
            self.write(batch, true)
                .map_err(|e| StorageIOError::write_logs(&e))?;
            self.tail().append(entries.into_iter().zip(sizes));
            publish(&self.synced, last);
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.write(batch, false)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.tail().append(entries.into_iter().zip(sizes));
        let appended = self
            .flusher
            .appended
            .as_ref()
            .expect("the queue is open while a store holds the flusher");
        appended.send(last).map_err(|_| {
            StorageIOError::write_logs(&std::io::Error::other("the log flusher has stopped"))
        })?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.family(LOG),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        batch.delete_cf(self.family(LOG), index_key(u64::MAX));
        self.write(batch, false)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.tail().truncate(log_id.index);
        self.truncations.record();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.family(STATE), LAST_PURGED, codec::encode(&log_id));
        batch.delete_range_cf(self.family(LOG), index_key(0), index_key(log_id.index + 1));
        self.write(batch, false)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.tail().purge(log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, EntryPayload, LeaderId};

    use rocksdb::WriteBatch;

    use super::{LOG, LogStore, WAL_FILE_BYTES, appends_as_leader, index_key, publish};
    use crate::types::{Entry, LogId, Vote};

    fn entry(term: u64, leader: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
            payload: EntryPayload::Blank,
        }
    }

    fn vote(term: u64, leader: u64) -> Option<Vote> {
        Some(Vote {
            leader_id: LeaderId::new(term, leader),
            committed: true,
        })
    }

    #[test]
    fn only_a_leaders_own_entries_of_its_term_skip_the_wait_for_the_sync() {
        let own = [entry(3, 1, 10), entry(3, 1, 11)];
        assert!(appends_as_leader(1, vote(3, 1), &own));
        // Following member 2 in term 3: its entries wait for the sync.
        assert!(!appends_as_leader(1, vote(3, 2), &[entry(3, 2, 10)]));
        // This member's entries of an earlier term, sent back by a later leader.
        assert!(!appends_as_leader(1, vote(4, 2), &[entry(3, 1, 10)]));
        // Leading term 4, entries of its term 3 are not this append's own.
        assert!(!appends_as_leader(
            1,
            vote(4, 1),
            &[entry(4, 1, 12), entry(3, 1, 11)]
        ));
        // Nothing voted yet, as when the cluster is initialized.
        assert!(!appends_as_leader(1, None, &own));
    }

    #[test]
    fn the_published_sync_point_only_rises() {
        let (synced, receiver) = tokio::sync::watch::channel(None);
        let id = |term, index| LogId::new(CommittedLeaderId::new(term, 1), index);
        publish(&synced, id(2, 9));
        // A sync of a stale leader append finishing after a follower's in-place sync.
        publish(&synced, id(1, 12));
        assert_eq!(*receiver.borrow(), Some(id(2, 9)));
        publish(&synced, id(3, 4));
        assert_eq!(*receiver.borrow(), Some(id(3, 4)));
    }

    #[tokio::test]
    async fn a_leadership_of_its_own_comes_back_as_a_candidacy_for_its_term() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), 1).unwrap();
        store.save_vote(&vote(3, 1).unwrap()).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path(), 1).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        // Someone else's leadership, and a candidacy, come back as saved.
        store.save_vote(&vote(4, 2).unwrap()).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), vote(4, 2));
        store.save_vote(&Vote::new(5, 1)).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(5, 1)));
    }

    #[tokio::test]
    async fn the_commit_index_is_written_with_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let committed = Some(entry(2, 1, 5).log_id);
        let mut store = LogStore::open(dir.path(), 1).unwrap();
        store.save_committed(committed).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), committed);
        drop(store);
        let mut store = LogStore::open(dir.path(), 1).unwrap();
        assert_eq!(
            store.read_committed().await.unwrap(),
            None,
            "not written alone"
        );
        store.save_committed(committed).await.unwrap();
        store.save_vote(&vote(2, 1).unwrap()).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path(), 1).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), committed);
    }

    #[tokio::test]
    async fn each_truncation_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), 1).unwrap();
        // openraft hands the store to its core; the proposer reads the count through a handle.
        let truncations = store.truncations();
        assert_eq!(truncations.count(), 0);
        store.clone().truncate(entry(1, 1, 2).log_id).await.unwrap();
        assert_eq!(truncations.count(), 1);
        store.truncate(entry(1, 1, 1).log_id).await.unwrap();
        assert_eq!(truncations.count(), 2);
    }

    #[tokio::test]
    async fn a_log_purged_whole_counts_as_synced_through_the_purge() {
        let dir = tempfile::tempdir().unwrap();
        let purged = LogId::new(CommittedLeaderId::new(2, 1), 7);
        let mut store = LogStore::open(dir.path(), 1).unwrap();
        store.purge(purged).await.unwrap();
        drop(store);
        let store = LogStore::open(dir.path(), 1).unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            store.synced().covering(Some(purged)),
        )
        .await
        .expect("waited for a sync of entries already purged")
        .unwrap();
    }

    #[test]
    fn after_a_crash_a_recycled_write_ahead_file_replays_only_its_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = 1 << 20;
        let indexes = 0..(3 * WAL_FILE_BYTES / chunk) as u64;
        let store = LogStore::open(dir.path(), 1).unwrap();
        for index in indexes.clone() {
            let mut batch = WriteBatch::default();
            batch.put_cf(store.family(LOG), index_key(index), vec![1; chunk]);
            store.write(batch, true).unwrap();
        }
        // Retire the current file, so the next one is a retired file written over: its first
        // record is the short one below, and the rest is older records that must not come back.
        store.db.flush().unwrap();
        let mut batch = WriteBatch::default();
        batch.put_cf(store.family(LOG), index_key(0), vec![2; 100]);
        store.write(batch, true).unwrap();
        // What a crash now would leave on disk: a clean close cuts each file to what it holds,
        // which would take the older records away.
        let crashed = tempfile::tempdir().unwrap();
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), crashed.path().join(file.file_name())).unwrap();
        }
        drop(store);

        let store = LogStore::open(crashed.path(), 1).unwrap();
        // RocksDB's info log of this open: it replayed the file and stopped at a record the
        // file held before it was recycled.
        let info_log = std::fs::read_to_string(crashed.path().join("LOG")).unwrap();
        assert!(
            info_log.contains("possibly recycled"),
            "the replayed file had no older records after its own"
        );
        let value = |index| {
            store
                .db
                .get_cf(store.family(LOG), index_key(index))
                .unwrap()
                .expect("written")
        };
        assert_eq!(value(0), vec![2; 100]);
        for index in indexes.skip(1) {
            // Not assert_eq!: a failure would print two megabytes.
            assert!(
                value(index) == vec![1; chunk],
                "index {index} lost its value"
            );
        }
    }
}
