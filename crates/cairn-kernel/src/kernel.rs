//! The kernel: an MVCC key-value store whose every change is a command applied in log order.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use rocksdb::WriteBatch;

use crate::error::{Error, KvError, StorageError};
use crate::index::Index;
use crate::lease::Leases;
use crate::plugin::{CallContext, PluginRuntime, ProposedWrite};
use crate::plugin_apply::{PendingPlugins, Plugins};
use crate::recent::RecentPuts;
use crate::storage::{Change, ChangeId, Durability, Meta, Storage};
use crate::types::{
    Command, CommandResponse, CompactRequest, CompactResponse, DeleteRangeRequest,
    DeleteRangeResponse, Event, INITIAL_REVISION, KeyRange, KeyValue, Lease, LeaseGrantRequest,
    LeaseGrantResponse, LeaseId, LeaseRevokeRequest, LeaseRevokeResponse, NO_LEASE, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Revision, TxnRequest, TxnResponse,
};
use crate::validate::{self, Limits};

/// Cairn's replicated state: keys, their history, and the counters that order it.
///
/// Writes go through [`Kernel::apply`], a pure function of the state and the command: no clock,
/// no randomness, no I/O but this store. Applied commands become durable together at
/// [`Kernel::commit`], so a caller batches many commands into one fsync. Reads ([`Kernel::range`])
/// see everything applied, so a caller that must not expose undurable state commits before it
/// lets readers in.
pub struct Kernel {
    storage: Storage,
    index: Index,
    leases: Leases,
    revision: Revision,
    compact_revision: Revision,
    applied_index: u64,
    /// The clock plugin calls see: the newest entry time applied, so it never goes back, even
    /// when a new leader's clock is behind the old one's.
    time_ms: u64,
    replication: Vec<u8>,
    limits: Limits,
    pub(crate) pending: Pending,
    /// The newest committed puts, so reads of keys written lately skip RocksDB.
    recent: RecentPuts,
    /// What applied commands changed, in order, until [`Kernel::take_events`] collects them.
    events: Vec<Event>,
    pub(crate) plugins: Plugins,
    pub(crate) plugin_runtime: Option<Arc<dyn PluginRuntime>>,
    /// The place of the command being applied in its log entry: with the entry's index, it
    /// seeds plugin calls' PRNG.
    entry_command: u32,
}

/// An answer of [`Kernel::history_events`].
#[derive(Debug, PartialEq, Eq)]
pub enum History {
    /// The events from the revision asked for, oldest first; empty when there are none yet.
    Events(Vec<Event>),
    /// History before the revision asked for is gone; this is the compacted revision.
    Compacted(Revision),
}

/// What apply has changed since the last commit.
#[derive(Default)]
pub(crate) struct Pending {
    /// New changes, readable before they reach disk.
    changes: HashMap<ChangeId, Change>,
    /// Committed changes that compaction dropped.
    removed: Vec<ChangeId>,
    /// Leases granted (`Some(ttl)`) or revoked (`None`).
    leases: BTreeMap<LeaseId, Option<i64>>,
    pub plugins: PendingPlugins,
    /// Whether anything but the applied index changed.
    pub state_changed: bool,
    /// Whether anything at all changed.
    meta_changed: bool,
}

impl Kernel {
    /// Opens (or creates) the store in `dir` and rebuilds the key index from history.
    pub fn open(dir: &Path, limits: Limits) -> Result<Kernel, StorageError> {
        let storage = Storage::open(dir)?;
        let meta = storage.meta()?;
        let mut index = Index::default();
        let mut changes = 0u64;
        let mut key_leases: HashMap<Vec<u8>, LeaseId> = HashMap::new();
        for item in storage.history_from(INITIAL_REVISION) {
            let (id, change) = item?;
            if id.main > meta.revision {
                return Err(StorageError::Corrupt {
                    family: "history",
                    reason: format!(
                        "change at {} beyond the store revision {}",
                        id.main, meta.revision
                    ),
                });
            }
            index.record(change.key(), id, matches!(change, Change::Delete { .. }));
            match &change {
                Change::Put(kv) if kv.lease != NO_LEASE => {
                    key_leases.insert(kv.key.clone(), kv.lease);
                }
                _ => {
                    key_leases.remove(change.key());
                }
            }
            changes += 1;
        }
        let mut leases = Leases::default();
        for item in storage.leases() {
            let (id, ttl) = item?;
            leases.grant(id, ttl);
        }
        for (key, lease) in key_leases {
            if !leases.contains(lease) {
                return Err(StorageError::Corrupt {
                    family: "lease",
                    reason: format!("key {key:?} is attached to lease {lease}, which is missing"),
                });
            }
            leases.move_key(&key, NO_LEASE, lease);
        }
        let plugins = Plugins::load(&storage)?;
        tracing::info!(
            revision = meta.revision,
            compact_revision = meta.compact_revision,
            applied_index = meta.applied_index,
            changes,
            "kernel opened"
        );
        Ok(Kernel {
            storage,
            index,
            leases,
            revision: meta.revision,
            compact_revision: meta.compact_revision,
            applied_index: meta.applied_index,
            time_ms: meta.time_ms,
            replication: meta.replication,
            limits,
            pending: Pending::default(),
            recent: RecentPuts::default(),
            events: Vec::new(),
            plugins,
            plugin_runtime: None,
            entry_command: 0,
        })
    }

    /// The newest revision: the one reads see by default.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Reads before this revision fail as compacted; -1 before the first compaction.
    pub fn compact_revision(&self) -> Revision {
        self.compact_revision
    }

    /// Index of the last command applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// What the layer feeding commands last recorded with [`Kernel::set_replication_state`].
    pub fn replication_state(&self) -> &[u8] {
        &self.replication
    }

    /// Records `state` for the layer feeding commands (for Raft: the last applied log id and
    /// membership). It reaches disk with the next commit, atomically with the commands it covers.
    pub fn set_replication_state(&mut self, state: Vec<u8>) {
        self.replication = state;
        self.pending.meta_changed = true;
    }

    /// Starts the command log over: the applied index returns to 0 and the replication state is
    /// cleared, durably, while keys, history and revisions stay. For a new cluster seeded from
    /// another's backup, whose log begins again at its first entry.
    pub fn restart_log(&mut self) -> Result<(), StorageError> {
        assert!(
            !self.has_uncommitted(),
            "log restarted with applied commands not yet committed"
        );
        self.applied_index = 0;
        self.replication.clear();
        self.pending.meta_changed = true;
        self.pending.state_changed = true;
        self.commit(Durability::Fsync)
    }

    /// Approximate bytes the store occupies, on disk and in write buffers.
    pub fn size_bytes(&self) -> u64 {
        self.storage.size_bytes()
    }

    /// Reads a range at the request's revision.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Error> {
        validate::range_request(request)?;
        self.range_at(request, self.revision)
    }

    /// Evaluates a txn that writes nothing. It takes `&mut self` because it shares the txn
    /// machinery of apply, but leaves the state and the applied index as they were.
    pub fn read_only_txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, Error> {
        assert!(
            request.is_read_only(),
            "read_only_txn given a txn that writes"
        );
        validate::txn_request(request, &self.limits)?;
        let revision = self.revision;
        let response = self.txn(request)?;
        assert_eq!(
            self.revision, revision,
            "a read-only txn changed the revision"
        );
        Ok(response)
    }

    /// Applies the command at log position `index`. A refused command changes nothing but the
    /// applied index. A storage error leaves the in-memory state ahead of the disk: the caller
    /// must stop using this kernel.
    pub fn apply(&mut self, index: u64, command: &Command) -> Result<CommandResponse, Error> {
        self.advance_to(index, 0);
        self.apply_one(command)
    }

    /// Lets plugin commands run; without a runtime they are refused. Every replica of a cluster
    /// must run the same runtime, or their states diverge.
    pub fn set_plugin_runtime(&mut self, runtime: Arc<dyn PluginRuntime>) {
        self.plugin_runtime = Some(runtime);
    }

    /// The runtime plugin commands run on, for a kernel that replaces this one.
    pub fn plugin_runtime(&self) -> Option<Arc<dyn PluginRuntime>> {
        self.plugin_runtime.clone()
    }

    /// Applies the commands one log entry carries, in order, each as [`Kernel::apply`] would:
    /// each gets its own revision and its own response or refusal. `time_ms` is the leader's
    /// clock when it appended the entry; plugin calls see the newest such time applied, their
    /// only clock. Stops at a storage
    /// error, after which the caller must stop using this kernel.
    pub fn apply_batch(
        &mut self,
        index: u64,
        time_ms: u64,
        commands: &[Command],
    ) -> Result<Vec<Result<CommandResponse, KvError>>, StorageError> {
        self.advance_to(index, time_ms);
        commands
            .iter()
            .enumerate()
            .map(|(position, command)| {
                self.entry_command = position as u32;
                self.apply_one(command)
            })
            .map(|outcome| match outcome {
                Ok(response) => Ok(Ok(response)),
                Err(Error::Kv(refusal)) => Ok(Err(refusal)),
                Err(Error::Storage(error)) => Err(error),
            })
            .collect()
    }

    fn advance_to(&mut self, index: u64, time_ms: u64) {
        assert!(
            index > self.applied_index,
            "log index {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
        self.time_ms = self.time_ms.max(time_ms);
        self.entry_command = 0;
        self.pending.meta_changed = true;
    }

    /// The context of a plugin run for the command being applied; its PRNG seed mixes the log
    /// index with the command's place in the entry, so no two commands share one.
    pub(crate) fn entry_context(&self) -> CallContext {
        let position = (self.applied_index << 16) ^ u64::from(self.entry_command);
        CallContext {
            now_ms: self.time_ms,
            revision: self.revision,
            caller: String::new(),
            lease: NO_LEASE,
            seed: position.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    fn apply_one(&mut self, command: &Command) -> Result<CommandResponse, Error> {
        validate::command(command, &self.limits)?;
        match command {
            Command::Put(put) => {
                if put.lease != NO_LEASE && !self.leases.contains(put.lease) {
                    return Err(KvError::LeaseNotFound.into());
                }
                self.validate_put(put)?;
                let mut writer = Writer::new(self);
                let response = writer.put(put)?;
                writer.finish();
                Ok(CommandResponse::Put(response))
            }
            Command::DeleteRange(delete) => {
                self.validate_delete(&delete.range)?;
                let mut writer = Writer::new(self);
                let response = writer.delete_range(delete)?;
                writer.finish();
                Ok(CommandResponse::DeleteRange(response))
            }
            Command::Txn(txn) => self.txn(txn).map(CommandResponse::Txn),
            Command::Compact(compact) => self.compact(*compact).map(CommandResponse::Compact),
            Command::LeaseGrant(grant) => self.grant(*grant).map(CommandResponse::LeaseGrant),
            Command::LeaseRevoke(revoke) => self.revoke(*revoke).map(CommandResponse::LeaseRevoke),
            Command::PluginDeploy(deploy) => self.deploy(deploy).map(CommandResponse::PluginDeploy),
            Command::PluginRemove(remove) => self
                .remove_plugin(remove)
                .map(CommandResponse::PluginRemove),
            Command::PluginBind(bind) => self.bind(bind).map(CommandResponse::PluginBind),
            Command::PluginCall(call) => self.call(call).map(CommandResponse::PluginCall),
        }
    }

    /// Runs the validators bound to a put's key, if any.
    fn validate_put(&self, put: &PutRequest) -> Result<(), Error> {
        if !self.hooks_reach(&KeyRange::Key(put.key.clone())) {
            return Ok(());
        }
        let value = if put.ignore_value {
            // etcd's refusal of an ignore_value put of a missing key comes first.
            let existing = self.key_at(&put.key, self.revision)?;
            Some(existing.ok_or(KvError::KeyNotFound)?.value)
        } else {
            Some(put.value.clone())
        };
        self.run_validators(&[ProposedWrite {
            key: put.key.clone(),
            value,
        }])
    }

    /// Runs the validators bound to the keys a delete removes, if any.
    fn validate_delete(&self, range: &KeyRange) -> Result<(), Error> {
        if !self.hooks_reach(range) {
            return Ok(());
        }
        let writes: Vec<ProposedWrite> = self
            .index
            .visible(range, self.revision)
            .map(|(key, _)| ProposedWrite {
                key: key.to_vec(),
                value: None,
            })
            .collect();
        self.run_validators(&writes)
    }

    fn grant(&mut self, request: LeaseGrantRequest) -> Result<LeaseGrantResponse, Error> {
        if self.leases.contains(request.id) {
            return Err(KvError::LeaseExists.into());
        }
        self.leases.grant(request.id, request.ttl);
        self.pending.leases.insert(request.id, Some(request.ttl));
        self.pending.state_changed = true;
        Ok(LeaseGrantResponse {
            revision: self.revision,
            id: request.id,
            ttl: request.ttl,
        })
    }

    /// Deletes the lease's keys in key order, all at one revision, as etcd does.
    fn revoke(&mut self, request: LeaseRevokeRequest) -> Result<LeaseRevokeResponse, Error> {
        let lease = self.leases.get(request.id).ok_or(KvError::LeaseNotFound)?;
        let mut writer = Writer::new(self);
        for key in lease.keys {
            let deleted = writer.delete_range(&DeleteRangeRequest {
                range: KeyRange::Key(key),
                prev_kv: false,
            })?;
            assert_eq!(deleted.deleted, 1, "a lease held a key that does not exist");
        }
        let revision = writer.finish();
        self.leases.remove(request.id);
        self.pending.leases.insert(request.id, None);
        self.pending.state_changed = true;
        Ok(LeaseRevokeResponse { revision })
    }

    /// The TTL lease `id` was granted with, if it exists.
    pub fn lease_ttl(&self, id: LeaseId) -> Option<i64> {
        self.leases.ttl(id)
    }

    /// A granted lease with its keys, if it exists.
    pub fn lease(&self, id: LeaseId) -> Option<Lease> {
        self.leases.get(id)
    }

    /// Every granted lease with its TTL, in id order.
    pub fn lease_ttls(&self) -> Vec<(LeaseId, i64)> {
        self.leases.ttls()
    }

    /// The changes applied since the last call, in revision order: what watchers are told.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The changes of revisions `from` onwards as events, read from committed history, up to
    /// about `max_events` of them but always whole revisions; or, when history before `from` has
    /// been compacted away, the compacted revision.
    pub fn history_events(
        &self,
        from: Revision,
        max_events: usize,
    ) -> Result<History, StorageError> {
        assert!(
            self.pending.changes.is_empty(),
            "history read with applied changes not yet committed"
        );
        if from < self.compact_revision {
            return Ok(History::Compacted(self.compact_revision));
        }
        let mut events: Vec<Event> = Vec::new();
        for item in self.storage.history_from(from.max(1)) {
            let (id, change) = item?;
            if events.len() >= max_events && events.last().is_some_and(|e| e.revision() < id.main) {
                break;
            }
            let prev_kv = self.key_at(change.key(), id.main - 1)?;
            events.push(change.into_event(id.main, prev_kv));
        }
        Ok(History::Events(events))
    }

    /// Writes everything applied since the last commit in one batch.
    pub fn commit(&mut self, durability: Durability) -> Result<(), StorageError> {
        let pending = std::mem::take(&mut self.pending);
        if !pending.meta_changed {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (id, change) in &pending.changes {
            self.storage.stage_change(&mut batch, *id, change);
        }
        for id in &pending.removed {
            self.storage.stage_removal(&mut batch, *id);
        }
        for (id, ttl) in &pending.leases {
            self.storage.stage_lease(&mut batch, *id, *ttl);
        }
        for (digest, bytes) in &pending.plugins.components {
            self.storage
                .stage_blob(&mut batch, *digest, bytes.as_deref());
        }
        for (name, record) in &pending.plugins.records {
            self.storage.stage_plugin(&mut batch, name, record.as_ref());
        }
        self.storage.stage_meta(&mut batch, &self.meta());
        // A batch that only advances the applied index loses nothing if a crash undoes it: the
        // commands it covers changed nothing, so there is nothing to fsync for.
        let durability = if pending.state_changed {
            durability
        } else {
            Durability::Buffered
        };
        self.storage.write(batch, durability)?;
        for id in pending.removed {
            self.recent.remove(id);
        }
        let mut puts: Vec<(ChangeId, KeyValue)> = pending
            .changes
            .into_iter()
            .filter_map(|(id, change)| match change {
                Change::Put(kv) => Some((id, kv)),
                Change::Delete { .. } => None,
            })
            .collect();
        puts.sort_unstable_by_key(|(id, _)| *id);
        for (id, kv) in puts {
            self.recent.insert(id, kv);
        }
        Ok(())
    }

    fn meta(&self) -> Meta {
        Meta {
            revision: self.revision,
            compact_revision: self.compact_revision,
            applied_index: self.applied_index,
            time_ms: self.time_ms,
            replication: self.replication.clone(),
        }
    }

    fn compact(&mut self, request: CompactRequest) -> Result<CompactResponse, Error> {
        if request.revision <= self.compact_revision {
            return Err(KvError::Compacted.into());
        }
        if request.revision > self.revision {
            return Err(KvError::FutureRevision.into());
        }
        for id in self.index.compact(request.revision) {
            if self.pending.changes.remove(&id).is_none() {
                self.pending.removed.push(id);
            }
        }
        self.compact_revision = request.revision;
        self.pending.state_changed = true;
        Ok(CompactResponse {
            revision: self.revision,
        })
    }

    /// `key`'s state at `revision`, if it existed then.
    pub(crate) fn key_at(
        &self,
        key: &[u8],
        revision: Revision,
    ) -> Result<Option<KeyValue>, StorageError> {
        self.index
            .visible_key(key, revision)
            .map(|id| self.load(id))
            .transpose()
    }

    /// The key-value a visible change holds.
    pub(crate) fn load(&self, id: ChangeId) -> Result<KeyValue, StorageError> {
        let change = match (self.pending.changes.get(&id), self.recent.get(id)) {
            (Some(change), _) => Some(change.clone()),
            (None, Some(kv)) => return Ok(kv.clone()),
            (None, None) => self.storage.change(id)?,
        };
        match change {
            Some(Change::Put(kv)) => Ok(kv),
            other => Err(StorageError::Corrupt {
                family: "history",
                reason: format!("index points at {id:?}, which holds {other:?}"),
            }),
        }
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Whether anything applied has not been committed yet.
    pub(crate) fn has_uncommitted(&self) -> bool {
        self.pending.meta_changed
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }
}

/// The writes of one command: every change it makes shares one main revision.
pub(crate) struct Writer<'k> {
    kernel: &'k mut Kernel,
    begin: Revision,
    changes: u32,
}

impl<'k> Writer<'k> {
    pub fn new(kernel: &'k mut Kernel) -> Writer<'k> {
        let begin = kernel.revision;
        Writer {
            kernel,
            begin,
            changes: 0,
        }
    }

    /// The revision reads inside the command see: its own changes included.
    pub fn read_revision(&self) -> Revision {
        self.begin + Revision::from(self.changes > 0)
    }

    fn write_revision(&self) -> Revision {
        self.begin + 1
    }

    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Error> {
        self.kernel.range_at(request, self.read_revision())
    }

    pub fn put(&mut self, request: &PutRequest) -> Result<PutResponse, Error> {
        let previous = self.kernel.key_at(&request.key, self.read_revision())?;
        if (request.ignore_value || request.ignore_lease) && previous.is_none() {
            assert_eq!(self.changes, 0, "put refused after its command wrote");
            return Err(KvError::KeyNotFound.into());
        }
        let revision = self.write_revision();
        let kv = KeyValue {
            key: request.key.clone(),
            create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            value: match (&previous, request.ignore_value) {
                (Some(previous), true) => previous.value.clone(),
                _ => request.value.clone(),
            },
            lease: match (&previous, request.ignore_lease) {
                (Some(previous), true) => previous.lease,
                _ => request.lease,
            },
        };
        self.kernel.leases.move_key(
            &kv.key,
            previous.as_ref().map_or(NO_LEASE, |p| p.lease),
            kv.lease,
        );
        self.record(Change::Put(kv), previous.clone());
        Ok(PutResponse {
            revision,
            prev_kv: if request.prev_kv { previous } else { None },
        })
    }

    pub fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Error> {
        let doomed: Vec<ChangeId> = self
            .kernel
            .index
            .visible(&request.range, self.read_revision())
            .map(|(_, id)| id)
            .collect();
        let doomed_kvs = doomed
            .iter()
            .map(|id| self.kernel.load(*id))
            .collect::<Result<Vec<_>, _>>()?;
        for kv in &doomed_kvs {
            self.kernel.leases.move_key(&kv.key, kv.lease, NO_LEASE);
            self.record(
                Change::Delete {
                    key: kv.key.clone(),
                },
                Some(kv.clone()),
            );
        }
        Ok(DeleteRangeResponse {
            revision: self.read_revision(),
            deleted: doomed_kvs.len() as i64,
            prev_kvs: if request.prev_kv {
                doomed_kvs
            } else {
                Vec::new()
            },
        })
    }

    fn record(&mut self, change: Change, prev_kv: Option<KeyValue>) {
        let id = ChangeId {
            main: self.write_revision(),
            sub: self.changes,
        };
        self.kernel
            .index
            .record(change.key(), id, matches!(change, Change::Delete { .. }));
        self.kernel
            .events
            .push(change.clone().into_event(id.main, prev_kv));
        self.kernel.pending.changes.insert(id, change);
        self.kernel.pending.state_changed = true;
        self.changes += 1;
    }

    /// Makes the command's changes the newest revision; returns the store revision.
    pub fn finish(self) -> Revision {
        if self.changes > 0 {
            self.kernel.revision = self.write_revision();
        }
        self.kernel.revision
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::types::{
        Compare, CompareResult, CompareTarget, EventKind, LEASE_TTL_MAX, RequestOp, ResponseOp,
        SortOrder, SortTarget,
    };

    struct Store {
        dir: tempfile::TempDir,
        kernel: Kernel,
    }

    impl Store {
        fn new() -> Store {
            let dir = tempfile::tempdir().unwrap();
            let kernel = Kernel::open(dir.path(), Limits::default()).unwrap();
            Store { dir, kernel }
        }

        fn apply(&mut self, command: Command) -> Result<CommandResponse, Error> {
            let index = self.kernel.applied_index() + 1;
            self.kernel.apply(index, &command)
        }

        fn put(&mut self, key: &str, value: &str) -> PutResponse {
            match self
                .apply(Command::Put(PutRequest::new(key, value)))
                .unwrap()
            {
                CommandResponse::Put(response) => response,
                other => panic!("{other:?}"),
            }
        }

        fn get(&self, key: &str) -> Option<KeyValue> {
            let response = self
                .kernel
                .range(&RangeRequest::new(KeyRange::Key(key.into())))
                .unwrap();
            response.kvs.into_iter().next()
        }

        fn all_at(&self, revision: Revision) -> Vec<KeyValue> {
            let mut request = RangeRequest::new(KeyRange::From(vec![0]));
            request.revision = revision;
            self.kernel.range(&request).unwrap().kvs
        }

        fn reopen(self) -> Store {
            let Store { dir, kernel } = self;
            drop(kernel);
            let kernel = Kernel::open(dir.path(), Limits::default()).unwrap();
            Store { dir, kernel }
        }
    }

    fn delete(key: &str, end: &str) -> DeleteRangeRequest {
        DeleteRangeRequest {
            range: KeyRange::from_etcd(key.into(), end.into()),
            prev_kv: true,
        }
    }

    #[test]
    fn revisions_versions_and_creation_follow_etcd() {
        let mut store = Store::new();
        assert_eq!(store.kernel.revision(), 1);
        assert_eq!(store.put("k", "a").revision, 2);
        assert_eq!(store.put("k", "b").revision, 3);
        let kv = store.get("k").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));

        // Deleting nothing makes no revision; deleting something makes one.
        let CommandResponse::DeleteRange(none) =
            store.apply(Command::DeleteRange(delete("x", ""))).unwrap()
        else {
            panic!()
        };
        assert_eq!((none.deleted, none.revision), (0, 3));
        let CommandResponse::DeleteRange(gone) =
            store.apply(Command::DeleteRange(delete("k", ""))).unwrap()
        else {
            panic!()
        };
        assert_eq!((gone.deleted, gone.revision), (1, 4));
        assert_eq!(gone.prev_kvs[0].value, b"b");
        assert_eq!(store.get("k"), None);

        // A recreated key starts a new life.
        store.put("k", "c");
        let kv = store.get("k").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
        assert_eq!(store.all_at(3)[0].value, b"b");
        assert!(store.all_at(4).is_empty());
    }

    #[test]
    fn a_txn_writes_at_one_revision_and_a_refused_one_writes_nothing() {
        let mut store = Store::new();
        store.put("a", "1");
        let txn = TxnRequest {
            compare: vec![Compare {
                range: KeyRange::Key(b"a".to_vec()),
                target: CompareTarget::Value(b"1".to_vec()),
                result: CompareResult::Equal,
            }],
            success: vec![
                RequestOp::Put(PutRequest::new("b", "2")),
                RequestOp::Range(RangeRequest::new(KeyRange::Key(b"b".to_vec()))),
                RequestOp::DeleteRange(delete("a", "")),
            ],
            failure: vec![],
        };
        let CommandResponse::Txn(response) = store.apply(Command::Txn(txn)).unwrap() else {
            panic!()
        };
        assert!(response.succeeded);
        assert_eq!(response.revision, 3);
        let ResponseOp::Range(read_own_write) = &response.responses[1] else {
            panic!()
        };
        assert_eq!(read_own_write.kvs[0].value, b"2");
        assert_eq!(read_own_write.revision, 3);

        let applied = store.kernel.applied_index();
        let mut ignore = PutRequest::new("missing", "");
        ignore.ignore_value = true;
        let refused = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(PutRequest::new("c", "3")),
                RequestOp::Put(ignore),
            ],
            failure: vec![],
        };
        assert!(matches!(
            store.apply(Command::Txn(refused)),
            Err(Error::Kv(KvError::KeyNotFound))
        ));
        assert_eq!(store.kernel.revision(), 3);
        assert_eq!(store.kernel.applied_index(), applied + 1);
        assert_eq!(store.get("c"), None);
    }

    #[test]
    fn compaction_keeps_reads_at_and_after_its_revision() {
        let mut store = Store::new();
        store.put("a", "1");
        store.put("a", "2");
        store.put("b", "1");
        store.apply(Command::DeleteRange(delete("b", ""))).unwrap();
        let before: Vec<_> = (4..=5).map(|r| store.all_at(r)).collect();
        store
            .apply(Command::Compact(CompactRequest { revision: 4 }))
            .unwrap();
        assert_eq!((4..=5).map(|r| store.all_at(r)).collect::<Vec<_>>(), before);
        let mut old = RangeRequest::new(KeyRange::Key(b"a".to_vec()));
        old.revision = 3;
        assert!(matches!(
            store.kernel.range(&old),
            Err(Error::Kv(KvError::Compacted))
        ));
        let again = store.apply(Command::Compact(CompactRequest { revision: 4 }));
        assert!(matches!(again, Err(Error::Kv(KvError::Compacted))));
        let future = store.apply(Command::Compact(CompactRequest { revision: 6 }));
        assert!(matches!(future, Err(Error::Kv(KvError::FutureRevision))));
    }

    #[test]
    fn limits_sorting_and_filters() {
        let mut store = Store::new();
        for (key, value) in [("a", "z"), ("b", "y"), ("c", "x"), ("d", "w")] {
            store.put(key, value);
        }
        store.put("a", "v");
        let mut request = RangeRequest::new(KeyRange::From(b"a".to_vec()));
        request.limit = 2;
        let response = store.kernel.range(&request).unwrap();
        assert_eq!(
            (response.kvs.len(), response.more, response.count),
            (2, true, 4)
        );

        request.limit = 0;
        request.sort_order = SortOrder::Descend;
        request.sort_target = SortTarget::Mod;
        let keys: Vec<_> = store
            .kernel
            .range(&request)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, [b"a", b"d", b"c", b"b"]);

        request.sort_order = SortOrder::None;
        request.sort_target = SortTarget::Value;
        request.min_create_revision = 3;
        request.keys_only = true;
        let kvs = store.kernel.range(&request).unwrap().kvs;
        assert_eq!(
            kvs.iter().map(|kv| kv.key.as_slice()).collect::<Vec<_>>(),
            [b"d", b"c", b"b"]
        );
        assert!(kvs.iter().all(|kv| kv.value.is_empty()));
    }

    #[test]
    fn a_batch_applies_like_its_commands_one_by_one() {
        let commands = [
            Command::Put(PutRequest::new("a", "1")),
            Command::Put(PutRequest::new("", "refused")),
            Command::Put(PutRequest::new("a", "2")),
            Command::DeleteRange(delete("a", "")),
        ];
        let mut one_by_one = Store::new();
        let expected: Vec<_> = commands
            .iter()
            .map(|command| {
                one_by_one.apply(command.clone()).map_err(|e| match e {
                    Error::Kv(refusal) => refusal,
                    Error::Storage(error) => panic!("{error}"),
                })
            })
            .collect();
        let mut batched = Store::new();
        let responses = batched.kernel.apply_batch(1, 0, &commands).unwrap();
        assert_eq!(responses, expected);
        assert_eq!(batched.kernel.revision(), one_by_one.kernel.revision());
        assert_eq!(batched.kernel.applied_index(), 1);
        assert_eq!(batched.all_at(3), one_by_one.all_at(3));
    }

    #[test]
    fn restarting_the_log_keeps_the_data_and_applies_from_index_one() {
        let mut store = Store::new();
        store.put("a", "1");
        store.put("a", "2");
        store.kernel.set_replication_state(b"old cluster".to_vec());
        store.kernel.commit(Durability::Fsync).unwrap();
        store.kernel.restart_log().unwrap();
        let mut store = store.reopen();
        assert_eq!(store.kernel.applied_index(), 0);
        assert!(store.kernel.replication_state().is_empty());
        assert_eq!(store.get("a").unwrap().version, 2);
        let revision = store.kernel.revision();
        assert_eq!(store.put("b", "3").revision, revision + 1);
        assert_eq!(store.kernel.applied_index(), 1);
    }

    #[test]
    fn reopening_restores_exactly_what_was_committed() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut store = Store::new();
        let keys = ["a", "b", "c", "d", "e"];
        for _ in 0..300 {
            let key = keys[rng.random_range(0..keys.len())];
            let command = match rng.random_range(0..10) {
                0..=5 => Command::Put(PutRequest::new(key, format!("{}", rng.random::<u16>()))),
                6..=7 => Command::DeleteRange(delete(key, "")),
                8 => Command::Txn(TxnRequest {
                    compare: vec![],
                    success: vec![
                        RequestOp::Put(PutRequest::new("t1", key)),
                        RequestOp::Put(PutRequest::new("t2", key)),
                    ],
                    failure: vec![],
                }),
                _ => Command::Compact(CompactRequest {
                    revision: rng.random_range(1..=store.kernel.revision()),
                }),
            };
            let _ = store.apply(command);
            if rng.random_bool(0.2) {
                store.kernel.commit(Durability::Buffered).unwrap();
            }
        }
        store.kernel.commit(Durability::Fsync).unwrap();
        let revision = store.kernel.revision();
        let compacted = store.kernel.compact_revision();
        let applied = store.kernel.applied_index();
        let views: Vec<_> = (compacted.max(1)..=revision)
            .map(|r| store.all_at(r))
            .collect();

        // Applied but never committed: gone after a reopen.
        store.put("uncommitted", "x");
        let store = store.reopen();
        assert_eq!(store.kernel.revision(), revision);
        assert_eq!(store.kernel.compact_revision(), compacted);
        assert_eq!(store.kernel.applied_index(), applied);
        assert_eq!(
            (compacted.max(1)..=revision)
                .map(|r| store.all_at(r))
                .collect::<Vec<_>>(),
            views
        );
        assert_eq!(store.get("uncommitted"), None);
    }

    fn put_with_lease(key: &str, value: &str, lease: LeaseId) -> Command {
        Command::Put(PutRequest {
            lease,
            ..PutRequest::new(key, value)
        })
    }

    fn grant(id: LeaseId, ttl: i64) -> Command {
        Command::LeaseGrant(LeaseGrantRequest { id, ttl })
    }

    fn events_from(store: &mut Store, from: Revision) -> Vec<(EventKind, String, Revision)> {
        store.kernel.commit(Durability::Buffered).unwrap();
        match store.kernel.history_events(from, usize::MAX).unwrap() {
            History::Events(events) => events
                .into_iter()
                .map(|e| {
                    (
                        e.kind,
                        String::from_utf8(e.kv.key.clone()).unwrap(),
                        e.revision(),
                    )
                })
                .collect(),
            History::Compacted(at) => panic!("compacted at {at}"),
        }
    }

    #[test]
    fn leases_hold_keys_until_revoked_and_survive_a_reopen() {
        let mut store = Store::new();
        assert!(matches!(
            store.apply(put_with_lease("k", "v", 7)),
            Err(Error::Kv(KvError::LeaseNotFound))
        ));
        assert!(matches!(
            store.apply(grant(7, LEASE_TTL_MAX + 1)),
            Err(Error::Kv(KvError::LeaseTtlTooLarge))
        ));
        let CommandResponse::LeaseGrant(granted) = store.apply(grant(7, 30)).unwrap() else {
            panic!("not a grant response");
        };
        assert_eq!((granted.id, granted.ttl, granted.revision), (7, 30, 1));
        assert!(matches!(
            store.apply(grant(7, 30)),
            Err(Error::Kv(KvError::LeaseExists))
        ));
        store.apply(grant(8, 10)).unwrap();
        store.apply(put_with_lease("b", "1", 7)).unwrap();
        store.apply(put_with_lease("a", "1", 7)).unwrap();
        store.apply(put_with_lease("c", "1", 7)).unwrap();
        // Moving a key to another lease, or to none, detaches it.
        store.apply(put_with_lease("c", "2", 8)).unwrap();
        store.apply(put_with_lease("d", "1", 7)).unwrap();
        store.put("d", "2");
        store.kernel.commit(Durability::Fsync).unwrap();
        let mut store = store.reopen();
        let lease = store.kernel.lease(7).unwrap();
        assert_eq!(lease.ttl, 30);
        assert_eq!(lease.keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(store.kernel.lease_ttls(), vec![(7, 30), (8, 10)]);

        let before = store.kernel.revision();
        store.kernel.take_events();
        let CommandResponse::LeaseRevoke(revoked) = store
            .apply(Command::LeaseRevoke(LeaseRevokeRequest { id: 7 }))
            .unwrap()
        else {
            panic!("not a revoke response");
        };
        assert_eq!(
            revoked.revision,
            before + 1,
            "one revision for all its keys"
        );
        let deleted: Vec<_> = store
            .kernel
            .take_events()
            .into_iter()
            .map(|e| (e.kind, e.kv.key, e.prev_kv.map(|kv| kv.value)))
            .collect();
        assert_eq!(
            deleted,
            vec![
                (EventKind::Delete, b"a".to_vec(), Some(b"1".to_vec())),
                (EventKind::Delete, b"b".to_vec(), Some(b"1".to_vec())),
            ]
        );
        assert!(store.get("a").is_none() && store.get("b").is_none());
        assert_eq!(store.get("c").unwrap().lease, 8);
        assert!(store.kernel.lease(7).is_none());
        assert!(matches!(
            store.apply(Command::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
            Err(Error::Kv(KvError::LeaseNotFound))
        ));
        store.kernel.commit(Durability::Fsync).unwrap();
        let store = store.reopen();
        assert_eq!(store.kernel.lease_ttls(), vec![(8, 10)]);
    }

    #[test]
    fn a_txn_refuses_an_unknown_lease_before_writing() {
        let mut store = Store::new();
        store.apply(grant(5, 10)).unwrap();
        let txn = |lease| {
            Command::Txn(TxnRequest {
                compare: Vec::new(),
                success: vec![
                    RequestOp::Put(PutRequest::new("x", "1")),
                    RequestOp::Put(PutRequest {
                        lease,
                        ..PutRequest::new("y", "1")
                    }),
                ],
                failure: Vec::new(),
            })
        };
        assert!(matches!(
            store.apply(txn(6)),
            Err(Error::Kv(KvError::LeaseNotFound))
        ));
        assert!(store.get("x").is_none());
        store.apply(txn(5)).unwrap();
        assert_eq!(store.kernel.lease(5).unwrap().keys, vec![b"y".to_vec()]);
    }

    #[test]
    fn applied_events_and_history_agree() {
        let mut store = Store::new();
        store.kernel.take_events();
        store.put("a", "1");
        store.put("b", "1");
        store.apply(Command::DeleteRange(delete("a", "c"))).unwrap();
        store.put("a", "2");
        let live: Vec<_> = store.kernel.take_events();
        store.kernel.commit(Durability::Buffered).unwrap();
        let History::Events(replayed) = store.kernel.history_events(2, usize::MAX).unwrap() else {
            panic!("compacted");
        };
        assert_eq!(
            live, replayed,
            "the apply path and history tell the same story"
        );
        assert_eq!(
            events_from(&mut store, 4),
            vec![
                (EventKind::Delete, "a".into(), 4),
                (EventKind::Delete, "b".into(), 4),
                (EventKind::Put, "a".into(), 5),
            ]
        );
        assert_eq!(live[2].prev_kv.as_ref().unwrap().value, b"1");
        assert_eq!(
            live[2].kv.create_revision, 0,
            "a delete event holds only key and revision"
        );

        // Pages end on whole revisions.
        let History::Events(page) = store.kernel.history_events(2, 2).unwrap() else {
            panic!("compacted");
        };
        assert_eq!(page.len(), 2);
        let History::Events(page) = store.kernel.history_events(4, 1).unwrap() else {
            panic!("compacted");
        };
        assert_eq!(page.len(), 2, "both deletes of revision 4");

        store
            .apply(Command::Compact(CompactRequest { revision: 4 }))
            .unwrap();
        store.kernel.commit(Durability::Buffered).unwrap();
        assert_eq!(
            store.kernel.history_events(3, 10).unwrap(),
            History::Compacted(4)
        );
        assert_eq!(
            events_from(&mut store, 5),
            vec![(EventKind::Put, "a".into(), 5)]
        );
        assert!(events_from(&mut store, 6).is_empty());
    }
}
