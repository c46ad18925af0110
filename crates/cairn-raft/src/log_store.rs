//! The Raft log in RocksDB, with group commit.
//!
//! Entries are written to RocksDB as soon as openraft hands them over, so they are readable at
//! once (the leader replicates from them), but not synced. A flusher thread then syncs RocksDB's
//! write-ahead log once for everything written meanwhile and only then reports those entries
//! flushed; openraft counts an entry towards a quorum, and so acknowledges a client, only after
//! that report. One fsync thus covers every client write that arrived while the previous one ran.
//!
//! The vote is written synced: it must be on disk before this member answers a vote request.
//! Truncation and purging need no sync of their own. RocksDB's write-ahead log is sequential, so
//! the sync that makes the entries replacing a truncated suffix durable makes the truncation
//! durable too, before those entries are reported flushed; and a purge lost in a crash only
//! leaves entries the snapshot already covers.

#![allow(
    clippy::result_large_err,
    reason = "openraft's storage traits return its large StorageError; the helpers feeding them return the same"
)]

use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

use crate::codec;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOG: &str = "log";
const STATE: &str = "state";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The log store; clones share one database and one flusher.
#[derive(Clone)]
pub struct LogStore {
    // Declared before `db`, so the flusher thread has let go of the database before this
    // store's handle to it drops: the last store to go closes the database on its own thread,
    // never on a detached one that a process exit could cut short mid-close.
    flusher: Arc<Flusher>,
    db: Arc<DB>,
}

/// The flusher thread and the queue of appends waiting for it; dropping it stops and joins the
/// thread.
struct Flusher {
    appended: Option<mpsc::Sender<LogFlushed<TypeConfig>>>,
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
    /// Opens (or creates) the log in `dir` and starts its flusher thread, which ends once every
    /// clone of the store is dropped.
    pub fn open(dir: &Path) -> Result<LogStore, rocksdb::Error> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families =
            [LOG, STATE].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = Arc::new(DB::open_cf_descriptors(&options, dir, families)?);
        let (appended, flushes) = mpsc::channel();
        let flushing_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-log-flush".into())
            .spawn(move || flush_loop(&flushing_db, &flushes))
            .expect("spawning the log flusher thread");
        let flusher = Arc::new(Flusher {
            appended: Some(appended),
            thread: Some(thread),
        });
        Ok(LogStore { flusher, db })
    }

    fn family(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    fn read_state<T: serde::de::DeserializeOwned>(
        &self,
        name: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let bytes = self
            .db
            .get_cf(self.family(STATE), name)
            .map_err(|e| StorageIOError::read(&e))?;
        bytes
            .map(|bytes| codec::decode(&bytes).map_err(|e| StorageIOError::read(&e).into()))
            .transpose()
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), rocksdb::Error> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options)
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut last = self.db.iterator_cf(self.family(LOG), IteratorMode::End);
        match last.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry =
                    codec::decode(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

/// Syncs the write-ahead log for every batch of appends that queued up meanwhile.
fn flush_loop(db: &DB, flushes: &mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = flushes.recv() {
        let mut waiting = vec![first];
        waiting.extend(flushes.try_iter());
        let synced = db.flush_wal(true).map_err(|e| e.to_string());
        if let Err(error) = &synced {
            tracing::error!(%error, "syncing the Raft log failed");
        }
        for callback in waiting {
            callback.log_io_completed(synced.clone().map_err(std::io::Error::other));
        }
    }
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
        let last_purged_log_id: Option<LogId> = self.read_state(LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
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
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_state(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.family(STATE), COMMITTED, codec::encode(&committed));
        self.write(batch, false)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_state::<Option<LogId>>(COMMITTED)?.flatten())
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
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(
                self.family(LOG),
                index_key(entry.log_id.index),
                codec::encode(&entry),
            );
        }
        self.write(batch, false)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let appended = self
            .flusher
            .appended
            .as_ref()
            .expect("the queue is open while a store holds the flusher");
        appended.send(callback).map_err(|_| {
            StorageIOError::write_logs(&std::io::Error::other("the log flusher has stopped"))
        })?;
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
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.family(STATE), LAST_PURGED, codec::encode(&log_id));
        batch.delete_range_cf(self.family(LOG), index_key(0), index_key(log_id.index + 1));
        self.write(batch, false)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
