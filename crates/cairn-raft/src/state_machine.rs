//! The state-machine adapter: committed entries go to the kernel; snapshots come from and go to
//! files.
//!
//! The kernel's commit is buffered, not fsynced: the Raft log is the durable record, and after a
//! crash openraft replays every entry after the last applied one the kernel has on disk. The
//! kernel stores that last applied log id and the membership with its own meta, in the same
//! batch as the state they describe, so they never disagree.
//!
//! On disk, under the member's data directory:
//!
//! ```text
//! raft/                the Raft log's RocksDB (see `log_store`)
//! state/CURRENT        names the kernel directory in use (replaced atomically by rename)
//! state/kv-<n>/        the kernel's RocksDB
//! snapshots/current.*  the newest snapshot (stream and meta), built here or received
//! cluster-id           the cluster this directory belongs to (see `cluster_file`)
//! restored-from        the checksum of the backup it was restored from, if it was
//! ```
//!
//! Installing a received snapshot restores it into a fresh `kv-<n+1>`, then switches CURRENT to
//! it: a crash at any point leaves either the old kernel or the new one, never a mix.

#![allow(
    clippy::result_large_err,
    reason = "openraft's storage traits return its large StorageError; the helpers feeding them return the same"
)]

use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cairn_kernel::{Durability, Kernel, Limits, Revision};
use futures_util::FutureExt;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, broadcast};

use crate::applied::AppliedPublisher;
use crate::codec;
use crate::fault::ApplyFault;
use crate::synced::SyncedLog;
use crate::types::{
    Applied, AppliedEvents, Entry, LogId, Snapshot, SnapshotFile, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};

const CURRENT: &str = "CURRENT";
const SNAPSHOT_STREAM: &str = "current.snap";
const SNAPSHOT_META: &str = "current.meta";
/// Where a snapshot sent by the leader is received, chunk by chunk.
const RECEIVING: &str = "receiving.snap";
/// The private copy a snapshot is installed from.
const INSTALLING: &str = "installing.snap";

/// What the kernel keeps for Raft in its meta: where it stands in the log.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LogPosition {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The data directory's layout.
#[derive(Clone, Debug)]
pub struct StateDirs {
    /// The Raft log.
    pub log: PathBuf,
    state: PathBuf,
    snapshots: PathBuf,
}

impl StateDirs {
    pub fn new(data_dir: &Path) -> StateDirs {
        StateDirs {
            log: data_dir.join("raft"),
            state: data_dir.join("state"),
            snapshots: data_dir.join("snapshots"),
        }
    }

    fn kernel_dir(&self, name: &str) -> PathBuf {
        self.state.join(name)
    }

    /// The kernel directory CURRENT names, creating the first one on a fresh data directory.
    fn current_kernel(&self) -> std::io::Result<String> {
        match std::fs::read_to_string(self.state.join(CURRENT)) {
            Ok(name) => Ok(name.trim().to_string()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let name = "kv-1".to_string();
                self.switch_to(&name)?;
                Ok(name)
            }
            Err(error) => Err(error),
        }
    }

    /// Points CURRENT at kernel directory `name`, durably and atomically.
    fn switch_to(&self, name: &str) -> std::io::Result<()> {
        crate::cluster_file::replace_durably(&self.state, CURRENT, name.as_bytes())
    }

    /// Removes kernel directories CURRENT does not name: leftovers of an interrupted install.
    fn remove_stale_kernels(&self, current: &str) {
        let Ok(entries) = std::fs::read_dir(&self.state) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("kv-") && name != current {
                tracing::info!(dir = %entry.path().display(), "removing a stale kernel directory");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Opens the kernel the data directory's CURRENT names, cleaning up after an interrupted install.
pub fn open_kernel(dirs: &StateDirs, limits: Limits) -> Result<(Kernel, String), OpenError> {
    let name = dirs.current_kernel().map_err(OpenError::Layout)?;
    dirs.remove_stale_kernels(&name);
    std::fs::create_dir_all(&dirs.snapshots).map_err(OpenError::Layout)?;
    let kernel = Kernel::open(&dirs.kernel_dir(&name), limits)?;
    Ok((kernel, name))
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory layout: {0}")]
    Layout(std::io::Error),
    #[error(transparent)]
    Kernel(#[from] cairn_kernel::StorageError),
}

/// The state machine openraft drives. Readers share the kernel through the same lock.
pub struct StateMachine {
    kernel: Arc<RwLock<Kernel>>,
    kernel_name: String,
    dirs: StateDirs,
    limits: Limits,
    snapshots_taken: Arc<AtomicU64>,
    /// Announces applied changes; sent under the kernel's write lock, so in revision order.
    events: broadcast::Sender<Arc<AppliedEvents>>,
    /// How far the log is on disk: an entry is applied only once it is.
    synced: SyncedLog,
    /// How far the kernel has applied the log, for requests waiting to see their effects.
    applied: AppliedPublisher,
    /// A fault a test injected, if any.
    fault: Option<ApplyFault>,
    /// Set once an apply or an install has failed: the kernel's memory may then be ahead of
    /// what it committed, and nothing may be read from it again.
    failed: Arc<AtomicBool>,
}

impl StateMachine {
    pub fn new(
        kernel: Arc<RwLock<Kernel>>,
        kernel_name: String,
        dirs: StateDirs,
        limits: Limits,
        events: broadcast::Sender<Arc<AppliedEvents>>,
        synced: SyncedLog,
        applied: AppliedPublisher,
    ) -> StateMachine {
        StateMachine {
            kernel,
            kernel_name,
            dirs,
            limits,
            snapshots_taken: Arc::default(),
            events,
            synced,
            applied,
            fault: None,
            failed: Arc::default(),
        }
    }

    /// A flag that turns true once this state machine has failed to apply or install.
    pub fn failed(&self) -> Arc<AtomicBool> {
        self.failed.clone()
    }

    /// Passes `outcome` on, remembering a failure.
    fn noting_failure<T>(&self, outcome: Result<T, StorageError>) -> Result<T, StorageError> {
        if outcome.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        outcome
    }

    /// The state machine, failing as `fault` says.
    pub fn with_fault(self, fault: Option<ApplyFault>) -> StateMachine {
        StateMachine { fault, ..self }
    }

    /// Applies committed `entries` to the kernel, in one commit.
    async fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<Vec<Applied>, StorageError> {
        // A leader reports its own entries written before they are synced (see log_store); a
        // leader that is the only voter commits on that report alone. Nothing it applies, and
        // so nothing a client is told or reads, may be lost with the page cache.
        let last = entries.last().map(|entry| entry.log_id);
        self.synced
            .covering(last)
            .await
            .map_err(|closed| StorageIOError::write_logs(&closed))?;
        let mut kernel = self.kernel.write().await;
        let revision_before = kernel.revision();
        let mut applied = applied_of(&kernel)?;
        let mut responses = Vec::new();
        // Entries this member proposed, by position in `responses`, with their proposers' slots.
        let mut answers = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let response = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(log_id), membership);
                    Vec::new()
                }
                EntryPayload::Normal(batch) => {
                    if let Some(slot) = batch.answer {
                        answers.push((responses.len(), slot));
                    }
                    if let Some(fault) = &self.fault {
                        fault
                            .strike(&batch.commands)
                            .map_err(|error| StorageIOError::apply(log_id, &io_error(error)))?;
                    }
                    kernel
                        .apply_batch(log_id.index, batch.time_ms, &batch.commands)
                        .map_err(|error| StorageIOError::apply(log_id, &error))?
                }
            };
            applied.last_applied = Some(log_id);
            responses.push(response);
        }
        // The applied index and the events announced, and this member's proposers answered,
        // before the commit's write: whoever waits reads the kernel only through its lock,
        // which this holds until the commit is done. Should the write fail, apply returns the
        // error and openraft stops this member. The index is published first, so the one a
        // forwarded write's answer carries covers the write.
        if let Some(last) = applied.last_applied {
            self.applied.publish(last.index);
        }
        let mut answered = false;
        for (position, slot) in answers {
            // openraft passes on an empty answer; the proposer has the real one.
            match slot.fill(std::mem::take(&mut responses[position])) {
                Ok(()) => answered = true,
                Err(unsent) => responses[position] = unsent,
            }
        }
        self.announce(&mut kernel, revision_before);
        if answered {
            // A proposer woken here would wait in this worker's LIFO slot until this task's
            // poll ends, after the commit's write. Yielding lets it answer its writers first;
            // this task then resumes behind what is queued on this worker.
            tokio::task::yield_now().await;
        }
        kernel.set_replication_state(codec::encode(&applied));
        kernel
            .commit(Durability::Buffered)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        Ok(responses)
    }

    /// Tells watchers what the entries just applied changed. Nobody listening is no error.
    fn announce(&self, kernel: &mut Kernel, revision_before: Revision) {
        let events = kernel.take_events();
        if kernel.revision() == revision_before {
            debug_assert!(events.is_empty(), "events without a new revision");
            return;
        }
        let _ = self.events.send(Arc::new(AppliedEvents {
            first_revision: revision_before + 1,
            revision: kernel.revision(),
            events,
        }));
    }
}

/// The last entry `kernel` has applied.
pub(crate) fn last_applied(kernel: &Kernel) -> Result<Option<LogId>, StorageError> {
    Ok(applied_of(kernel)?.last_applied)
}

fn applied_of(kernel: &Kernel) -> Result<LogPosition, StorageError> {
    let state = kernel.replication_state();
    if state.is_empty() {
        return Ok(LogPosition::default());
    }
    codec::decode(state).map_err(|e| StorageIOError::read_state_machine(&e).into())
}

fn io_error(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

/// What a panic said, when it said it with a string, as `panic!` does.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = applied_of(&*self.kernel.read().await)?;
        Ok((applied.last_applied, applied.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let last = entries.last().map_or(0, |entry| entry.log_id.index);
        let what = format!("applying entries up to index {last}");
        let applied = unless_panicked(&what, self.apply_entries(entries)).await;
        self.noting_failure(applied)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            kernel: self.kernel.clone(),
            dirs: self.dirs.clone(),
            snapshots_taken: self.snapshots_taken.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dirs.snapshots.join(RECEIVING))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let installed =
            unless_panicked("installing a snapshot", self.install(meta, snapshot)).await;
        self.noting_failure(installed)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        current_snapshot(&self.dirs)
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

impl StateMachine {
    /// Restores `snapshot` into a fresh kernel directory, switches to it, and keeps the stream as
    /// this member's current snapshot. Whatever file `snapshot` is, it is copied first, so the
    /// restore and the published stream read a private, synced copy.
    async fn install(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let fail = |e: std::io::Error| -> StorageError {
            StorageIOError::write_snapshot(Some(meta.signature()), &e).into()
        };
        let installing = self.dirs.snapshots.join(INSTALLING);
        let next_name = next_kernel_name(&self.kernel_name);
        let target = self.dirs.kernel_dir(&next_name);
        let limits = self.limits;
        let mut source = snapshot.into_std().await;
        let stream = installing.clone();
        let restored = tokio::task::spawn_blocking(move || {
            source.seek(SeekFrom::Start(0))?;
            let mut copy = std::fs::File::create(&stream)?;
            std::io::copy(&mut source, &mut copy)?;
            copy.sync_all()?;
            let mut input = BufReader::new(std::fs::File::open(&stream)?);
            cairn_kernel::snapshot::restore(&mut input, &target, limits).map_err(io_error)
        })
        .await
        .map_err(io_error)
        .and_then(|restored| restored)
        .map_err(fail)?;
        let _ = std::fs::remove_file(self.dirs.snapshots.join(RECEIVING));
        let restored_at = applied_of(&restored)?.last_applied;
        if restored_at != meta.last_log_id {
            return Err(fail(io_error(format!(
                "the snapshot holds state up to {restored_at:?}, its meta says {:?}",
                meta.last_log_id
            ))));
        }
        let mut kernel = self.kernel.write().await;
        self.dirs.switch_to(&next_name).map_err(fail)?;
        let old_name = std::mem::replace(&mut self.kernel_name, next_name);
        let plugins = kernel.plugin_runtime();
        *kernel = restored;
        if let Some(plugins) = plugins {
            kernel.set_plugin_runtime(plugins);
        }
        // The events between the old state and the snapshot's are in the new kernel's history,
        // not in memory: announce the jump so watchers read them from there.
        let revision = kernel.revision();
        let _ = self.events.send(Arc::new(AppliedEvents {
            first_revision: revision + 1,
            revision,
            events: Vec::new(),
        }));
        if let Some(last) = restored_at {
            self.applied.publish(last.index);
        }
        drop(kernel);
        let _ = std::fs::remove_dir_all(self.dirs.kernel_dir(&old_name));
        publish_snapshot(&self.dirs, &installing, meta).map_err(fail)?;
        tracing::info!(snapshot = %meta, "installed a snapshot");
        Ok(())
    }
}

/// Runs the state machine's `work`, named by `what`, turning a panic into a storage error, which
/// stops Raft: openraft's state-machine and snapshot tasks would otherwise end with it unnoticed,
/// and its core would go on leading or following without them. Whatever the panic left half-done
/// in memory is never used again: the member stops, and restarts from what is on disk.
async fn unless_panicked<T>(
    what: &str,
    work: impl Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let message = panic_message(&*panic);
            Err(StorageIOError::write_state_machine(&io_error(format!(
                "the state machine panicked {what}: {message}"
            )))
            .into())
        })
}

fn next_kernel_name(current: &str) -> String {
    let generation: u64 = current
        .strip_prefix("kv-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("kv-{}", generation + 1)
}

/// Makes `stream` the current snapshot, with `meta` beside it; the meta is renamed last, so a
/// meta on disk always describes the stream beside it.
fn publish_snapshot(dirs: &StateDirs, stream: &Path, meta: &SnapshotMeta) -> std::io::Result<()> {
    let _ = std::fs::remove_file(dirs.snapshots.join(SNAPSHOT_META));
    std::fs::rename(stream, dirs.snapshots.join(SNAPSHOT_STREAM))?;
    let temporary = dirs.snapshots.join("meta.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&codec::encode(meta))?;
    file.sync_all()?;
    std::fs::rename(&temporary, dirs.snapshots.join(SNAPSHOT_META))?;
    std::fs::File::open(&dirs.snapshots)?.sync_all()
}

async fn current_snapshot(dirs: &StateDirs) -> std::io::Result<Option<Snapshot>> {
    let meta = match tokio::fs::read(dirs.snapshots.join(SNAPSHOT_META)).await {
        Ok(bytes) => codec::decode::<SnapshotMeta>(&bytes).map_err(io_error)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let stream = tokio::fs::File::open(dirs.snapshots.join(SNAPSHOT_STREAM)).await?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(stream),
    }))
}

/// A backup written to a file under the snapshots directory, removed when dropped.
pub struct Backup {
    path: PathBuf,
    len: u64,
}

impl Backup {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Backup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static BACKUPS_TAKEN: AtomicU64 = AtomicU64::new(0);

/// Writes the kernel's committed state as a snapshot file, without holding up apply for longer
/// than a checkpoint takes.
pub async fn backup(kernel: &RwLock<Kernel>, dirs: &StateDirs) -> std::io::Result<Backup> {
    let taken = BACKUPS_TAKEN.fetch_add(1, Ordering::Relaxed);
    let checkpoint_dir = dirs.snapshots.join(format!("backup-checkpoint-{taken}"));
    let _ = std::fs::remove_dir_all(&checkpoint_dir);
    let checkpoint = kernel
        .read()
        .await
        .checkpoint(&checkpoint_dir)
        .map_err(io_error)?;
    let path = dirs.snapshots.join(format!("backup-{taken}.snap"));
    let target = path.clone();
    let len = tokio::task::spawn_blocking(move || {
        let mut out = BufWriter::new(std::fs::File::create(&target)?);
        let len = checkpoint.write_to(&mut out).map_err(io_error)?;
        out.flush()?;
        Ok::<_, std::io::Error>(len)
    })
    .await
    .map_err(io_error)??;
    Ok(Backup { path, len })
}

/// Whether `data_dir` already holds a member's state, so its start must not bootstrap again.
pub fn holds_member(data_dir: &Path) -> bool {
    StateDirs::new(data_dir).state.join(CURRENT).exists()
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} already holds a member's data; restore into a new directory")]
    NotEmpty(PathBuf),
    #[error("reading the backup: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Snapshot(#[from] cairn_kernel::SnapshotError),
    #[error(transparent)]
    Storage(#[from] cairn_kernel::StorageError),
    #[error("data directory layout: {0}")]
    Layout(std::io::Error),
}

/// Seeds `data_dir` with the state in `backup` (a stream from [`backup`], what etcd's Snapshot
/// RPC sends), for a member of a new cluster: keys, history and revisions come from the backup,
/// while the Raft log starts empty, to be bootstrapped by `--initial-cluster`. Returns the
/// revision restored.
pub fn restore_backup(
    backup: &Path,
    data_dir: &Path,
    limits: Limits,
) -> Result<cairn_kernel::Revision, RestoreError> {
    let dirs = StateDirs::new(data_dir);
    if holds_member(data_dir) || dirs.log.exists() {
        return Err(RestoreError::NotEmpty(data_dir.to_path_buf()));
    }
    let name = "kv-1";
    let target = dirs.kernel_dir(name);
    // Leftovers of an interrupted restore: nothing points at them yet.
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir_all(&dirs.state).map_err(RestoreError::Layout)?;
    let mut input = BufReader::new(std::fs::File::open(backup).map_err(RestoreError::Read)?);
    let mut kernel = cairn_kernel::snapshot::restore(&mut input, &target, limits)?;
    kernel.restart_log()?;
    let revision = kernel.revision();
    drop(kernel);
    // The stream ends with the sha256 of everything before it, which restore has checked: the
    // backup's own name, and what makes the restored cluster's ID its own.
    let mut file = input.into_inner();
    let mut digest = [0u8; 32];
    file.seek(SeekFrom::End(-(digest.len() as i64)))
        .and_then(|_| file.read_exact(&mut digest))
        .map_err(RestoreError::Read)?;
    crate::cluster_file::mark_restored(data_dir, &digest).map_err(RestoreError::Layout)?;
    // CURRENT is written last: until then the directory holds no member, and a retry starts over.
    dirs.switch_to(name).map_err(RestoreError::Layout)?;
    Ok(revision)
}

/// Builds a snapshot from a checkpoint of the kernel, so applying goes on while it is written.
pub struct SnapshotBuilder {
    kernel: Arc<RwLock<Kernel>>,
    dirs: StateDirs,
    snapshots_taken: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        unless_panicked("building a snapshot", self.build()).await
    }
}

impl SnapshotBuilder {
    async fn build(&mut self) -> Result<Snapshot, StorageError> {
        let fail =
            |e: std::io::Error| -> StorageError { StorageIOError::write_snapshot(None, &e).into() };
        let taken = self.snapshots_taken.fetch_add(1, Ordering::Relaxed);
        let checkpoint_dir = self.dirs.snapshots.join(format!("checkpoint-{taken}"));
        let _ = std::fs::remove_dir_all(&checkpoint_dir);
        let (checkpoint, applied) = {
            let kernel = self.kernel.read().await;
            let checkpoint = kernel
                .checkpoint(&checkpoint_dir)
                .map_err(|e| fail(io_error(e)))?;
            (checkpoint, applied_of(&kernel)?)
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id: format!("{}-{taken}", applied.last_applied.map_or(0, |id| id.index)),
        };
        let building = self.dirs.snapshots.join(format!("building-{taken}.snap"));
        let path = building.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::create(&path)?;
            let mut out = BufWriter::new(file);
            let bytes = checkpoint.write_to(&mut out).map_err(io_error)?;
            out.into_inner().map_err(io_error)?.sync_all()?;
            Ok::<_, std::io::Error>(bytes)
        })
        .await
        .map_err(|e| fail(io_error(e)))?
        .map_err(fail)?;
        publish_snapshot(&self.dirs, &building, &meta).map_err(fail)?;
        tracing::info!(snapshot = %meta, bytes, "built a snapshot");
        current_snapshot(&self.dirs)
            .await
            .map_err(fail)?
            .ok_or_else(|| fail(io_error("the snapshot just built is gone")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use cairn_kernel::{Command, CommandResponse, Kernel, Limits, PutRequest};
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload};
    use tokio::sync::{RwLock, broadcast, watch};

    use super::{StateDirs, StateMachine, open_kernel};
    use crate::answer_slot::AnswerSlot;
    use crate::applied::{AppliedLog, applied_log};
    use crate::fault::ApplyFault;
    use crate::synced::SyncedLog;
    use crate::types::{Batch, Entry, LogId};

    /// A state machine over a fresh kernel in `dir`, with its kernel, the sender of how far the
    /// log is synced, and the applied index it publishes.
    fn state_machine(
        dir: &tempfile::TempDir,
    ) -> (
        StateMachine,
        Arc<RwLock<Kernel>>,
        watch::Sender<Option<LogId>>,
        AppliedLog,
    ) {
        state_machine_with(dir, None)
    }

    /// As [`state_machine`], with `fault` injected.
    fn state_machine_with(
        dir: &tempfile::TempDir,
        fault: Option<ApplyFault>,
    ) -> (
        StateMachine,
        Arc<RwLock<Kernel>>,
        watch::Sender<Option<LogId>>,
        AppliedLog,
    ) {
        let dirs = StateDirs::new(dir.path());
        let (kernel, name) = open_kernel(&dirs, Limits::default()).unwrap();
        let kernel = Arc::new(RwLock::new(kernel));
        let (synced, synced_receiver) = watch::channel(None);
        let (publisher, applied) = applied_log(0);
        let state_machine = StateMachine::new(
            kernel.clone(),
            name,
            dirs,
            Limits::default(),
            broadcast::channel(4).0,
            SyncedLog::new(synced_receiver),
            publisher,
        )
        .with_fault(fault);
        (state_machine, kernel, synced, applied)
    }

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[tokio::test]
    async fn an_entry_is_applied_and_announced_only_once_the_log_is_synced_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state_machine, _, synced, applied) = state_machine(&dir);
        let applying = tokio::spawn(async move {
            let entry = Entry {
                log_id: log_id(1),
                payload: EntryPayload::Blank,
            };
            state_machine.apply([entry]).await.unwrap();
            state_machine.applied_state().await.unwrap().0
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let waiting = tokio::spawn(async move { applied.reaching(1, deadline).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!applying.is_finished(), "applied before the log was synced");
        assert!(
            !waiting.is_finished(),
            "announced before the log was synced"
        );
        synced.send_replace(Some(log_id(1)));
        assert_eq!(applying.await.unwrap(), Some(log_id(1)));
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_proposer_has_its_outcomes_from_its_slot_before_the_commit_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state_machine, kernel, synced, applied) = state_machine(&dir);
        synced.send_replace(Some(log_id(3)));
        let entry = |index, answer| {
            let mut batch = Batch::new(vec![Command::Put(PutRequest::new("k", "v"))]);
            batch.answer = answer;
            Entry {
                log_id: log_id(index),
                payload: EntryPayload::Normal(batch),
            }
        };
        let (slot, answered) = AnswerSlot::new();
        let (abandoned_slot, abandoned) = AnswerSlot::new();
        drop(abandoned);
        // The test runtime has one thread: the proposer runs only when apply lets it.
        let proposer = tokio::spawn(async move {
            let outcomes = answered.await.expect("the slot is filled");
            (outcomes, applied.current(), kernel.try_read().is_err())
        });
        let responses = state_machine
            .apply([
                entry(1, Some(slot)),
                entry(2, Some(abandoned_slot)),
                entry(3, None),
            ])
            .await
            .unwrap();
        let (outcomes, applied_then, kernel_locked_then) = proposer.await.unwrap();
        assert!(
            matches!(outcomes[..], [Ok(CommandResponse::Put(_))]),
            "{outcomes:?}"
        );
        assert_eq!(
            applied_then, 3,
            "announced before the proposer was answered"
        );
        assert!(
            kernel_locked_then,
            "the proposer was answered only after the commit was written"
        );
        assert!(
            responses[0].is_empty(),
            "openraft had the slot's outcomes too"
        );
        assert_eq!(responses[1].len(), 1, "outcomes nobody took are openraft's");
        assert_eq!(responses[2].len(), 1, "outcomes of an entry without a slot");
    }

    fn put_entry(index: u64, key: &str) -> Entry {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(Batch::new(vec![Command::Put(PutRequest::new(
                key, "v",
            ))])),
        }
    }

    #[tokio::test]
    async fn a_panic_while_applying_fails_the_apply_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fault = ApplyFault::parse("panic:boom").unwrap();
        let (mut state_machine, kernel, synced, _) = state_machine_with(&dir, Some(fault));
        synced.send_replace(Some(log_id(2)));
        let failed = state_machine
            .apply([put_entry(1, "fine"), put_entry(2, "boom")])
            .await
            .expect_err("a panic while applying is an error");
        assert!(failed.to_string().contains("injected fault"), "{failed}");
        assert_eq!(
            state_machine.applied_state().await.unwrap().0,
            None,
            "an entry of the failed apply counts as applied"
        );
        assert!(
            state_machine
                .failed()
                .load(std::sync::atomic::Ordering::Acquire),
            "reads of the kernel are not stopped"
        );
        // The kernel's lock is usable, so the member can shut down in order.
        drop(kernel.write().await);
    }

    #[tokio::test]
    async fn an_injected_error_fails_the_apply() {
        let dir = tempfile::tempdir().unwrap();
        let fault = ApplyFault::parse("error:boom").unwrap();
        let (mut state_machine, _, synced, _) = state_machine_with(&dir, Some(fault));
        synced.send_replace(Some(log_id(1)));
        let failed = state_machine.apply([put_entry(1, "boom")]).await;
        assert!(failed.is_err(), "{failed:?}");
    }
}
