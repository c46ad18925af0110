//! Applying plugin commands (deploy, remove, bind, call) and running the validators bound to the
//! keys a request writes.
//!
//! Each of these is a log entry, so every replica switches plugin versions, binds hooks and runs
//! calls at the same position. A call's writes commit with it at one new revision, after the
//! validators bound to them agree, or not at all.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{Error, KvError, PluginFailureKind, StorageError};
use crate::kernel::{Kernel, Writer};
use crate::plugin::{
    CallContext, Digest, LoadedPlugin, PluginBindRequest, PluginCallRequest, PluginCallResponse,
    PluginDeployRequest, PluginDeployResponse, PluginFailure, PluginRecord, PluginRecordResponse,
    PluginRemoveRequest, PluginRuntime, ProposedWrite,
};
use crate::plugin_txn::CallTxn;
use crate::storage::Storage;
use crate::types::{DeleteRangeRequest, KeyRange, NO_LEASE, PutRequest};

/// The deployed plugins and their components, as of the last applied entry.
#[derive(Default)]
pub(crate) struct Plugins {
    records: BTreeMap<String, PluginRecord>,
    components: HashMap<Digest, Arc<[u8]>>,
    /// Every validator binding as (prefix, plugin name), in that order: derived from the
    /// records whenever they change, since every write consults it.
    hooks: Vec<(Vec<u8>, String)>,
}

/// Plugin state changed since the last commit.
#[derive(Default)]
pub(crate) struct PendingPlugins {
    pub records: BTreeMap<String, Option<PluginRecord>>,
    pub components: BTreeMap<Digest, Option<Arc<[u8]>>>,
}

impl Plugins {
    pub fn load(storage: &Storage) -> Result<Plugins, StorageError> {
        let mut plugins = Plugins::default();
        for record in storage.plugin_records()? {
            if let Entry::Vacant(slot) = plugins.components.entry(record.digest) {
                let bytes =
                    storage
                        .plugin_blob(record.digest)?
                        .ok_or_else(|| StorageError::Corrupt {
                            family: "plugin",
                            reason: format!(
                                "{} names missing component {}",
                                record.name, record.digest
                            ),
                        })?;
                slot.insert(bytes.into());
            }
            plugins.insert(record);
        }
        Ok(plugins)
    }

    /// Adds or replaces a record; returns the one it replaced.
    fn insert(&mut self, record: PluginRecord) -> Option<PluginRecord> {
        let replaced = self.records.insert(record.name.clone(), record);
        self.index_hooks();
        replaced
    }

    fn remove(&mut self, name: &str) -> Option<PluginRecord> {
        let removed = self.records.remove(name);
        self.index_hooks();
        removed
    }

    fn index_hooks(&mut self) {
        self.hooks = self
            .records
            .values()
            .flat_map(|record| {
                record
                    .manifest
                    .hooks
                    .iter()
                    .map(|prefix| (prefix.clone(), record.name.clone()))
            })
            .collect();
        self.hooks.sort();
    }

    pub fn records(&self) -> impl Iterator<Item = &PluginRecord> {
        self.records.values()
    }

    pub fn get(&self, name: &str) -> Option<&PluginRecord> {
        self.records.get(name)
    }

    /// Every validator binding as (prefix, plugin), in prefix then name order.
    fn hooks(&self) -> impl Iterator<Item = (&[u8], &PluginRecord)> {
        self.hooks.iter().map(|(prefix, name)| {
            let record = self.records.get(name).expect("hooks name deployed plugins");
            (prefix.as_slice(), record)
        })
    }

    pub fn has_hooks(&self) -> bool {
        !self.hooks.is_empty()
    }

    fn component(&self, record: &PluginRecord) -> Arc<[u8]> {
        self.components
            .get(&record.digest)
            .expect("every deployed plugin's component is held")
            .clone()
    }
}

/// A call ready to run: what it runs and where.
struct PreparedCall {
    runtime: Arc<dyn PluginRuntime>,
    record: PluginRecord,
    component: Arc<[u8]>,
}

impl PreparedCall {
    fn run(&self, request: &PluginCallRequest, txn: &mut CallTxn<'_>) -> Result<Vec<u8>, Error> {
        let plugin = LoadedPlugin {
            digest: self.record.digest,
            component: &self.component,
            limits: self.record.manifest.limits,
        };
        match self
            .runtime
            .call(&plugin, &request.function, &request.input, txn)
        {
            Ok(output) => Ok(output),
            Err(PluginFailure::Storage(error)) => Err(error.into()),
            Err(PluginFailure::Runtime(reason)) => Err(StorageError::PluginRuntime(reason).into()),
            Err(failure) => Err(failed(request, &failure, &failure.to_string())),
        }
    }
}

impl Kernel {
    /// Every deployed plugin, in name order.
    pub fn plugins(&self) -> Vec<PluginRecord> {
        self.plugins.records().cloned().collect()
    }

    pub fn plugin(&self, name: &str) -> Option<PluginRecord> {
        self.plugins.get(name).cloned()
    }

    pub(crate) fn deploy(
        &mut self,
        request: &PluginDeployRequest,
    ) -> Result<PluginDeployResponse, Error> {
        let runtime = self.runtime()?;
        same_engine(&request.name, &request.engine, runtime.as_ref());
        let digest = Digest::of(&request.component);
        let exports = runtime.load(digest, &request.component).map_err(|reason| {
            KvError::PluginRefused(format!("component {digest} refused: {reason}"))
        })?;
        if !exports.recipe && !exports.validator {
            return Err(KvError::PluginRefused(format!(
                "component {digest} exports neither cairn:plugin/recipe nor cairn:plugin/validator"
            ))
            .into());
        }
        if !request.manifest.hooks.is_empty() && !exports.validator {
            return Err(KvError::PluginRefused(format!(
                "the manifest binds hooks [{}] but component {digest} does not export \
                 cairn:plugin/validator",
                crate::plugin::quoted_prefixes(&request.manifest.hooks)
            ))
            .into());
        }
        let mut manifest = request.manifest.clone();
        manifest.hooks.sort();
        manifest.hooks.dedup();
        let record = PluginRecord {
            name: request.name.clone(),
            version: request.version.clone(),
            digest,
            size: request.component.len() as u64,
            exports,
            manifest,
            deployed_index: self.applied_index(),
            engine: request.engine.clone(),
        };
        if let Entry::Vacant(slot) = self.plugins.components.entry(digest) {
            let bytes: Arc<[u8]> = request.component.as_slice().into();
            slot.insert(bytes.clone());
            self.pending.plugins.components.insert(digest, Some(bytes));
        }
        let replaced = self.put_record(record.clone());
        Ok(PluginDeployResponse {
            record,
            replaced: replaced.map(|old| old.version),
        })
    }

    pub(crate) fn remove_plugin(
        &mut self,
        request: &PluginRemoveRequest,
    ) -> Result<PluginRecordResponse, Error> {
        let record = self
            .plugins
            .remove(&request.name)
            .ok_or_else(|| KvError::PluginNotFound(request.name.clone()))?;
        self.pending
            .plugins
            .records
            .insert(record.name.clone(), None);
        self.forget_unused_component(record.digest);
        self.pending.state_changed = true;
        Ok(PluginRecordResponse { record })
    }

    pub(crate) fn bind(
        &mut self,
        request: &PluginBindRequest,
    ) -> Result<PluginRecordResponse, Error> {
        let mut record = self
            .plugins
            .get(&request.name)
            .cloned()
            .ok_or_else(|| KvError::PluginNotFound(request.name.clone()))?;
        let hooks = &mut record.manifest.hooks;
        let present = hooks.contains(&request.prefix);
        match (request.bound, present) {
            (true, false) => {
                if !record.exports.validator {
                    return Err(KvError::PluginRefused(format!(
                        "plugin {:?} does not export cairn:plugin/validator",
                        request.name
                    ))
                    .into());
                }
                hooks.push(request.prefix.clone());
                hooks.sort();
            }
            (false, true) => hooks.retain(|p| p != &request.prefix),
            (true, true) | (false, false) => return Ok(PluginRecordResponse { record }),
        }
        self.put_record(record.clone());
        Ok(PluginRecordResponse { record })
    }

    /// Runs a plugin call inside apply; its writes commit at one new revision if it succeeds
    /// and every validator bound to them agrees.
    pub(crate) fn call(
        &mut self,
        request: &PluginCallRequest,
    ) -> Result<PluginCallResponse, Error> {
        let context = self.call_context(request);
        let prepared = self.prepare_call(request)?;
        let mut txn = CallTxn::new(self, context, &prepared.record.manifest.prefixes, true);
        let output = prepared.run(request, &mut txn)?;
        let (writes, logs) = txn.into_writes();
        let proposed: Vec<ProposedWrite> = crate::plugin_txn::proposed(&writes);
        self.run_validators(&proposed)?;
        let mut writer = Writer::new(self);
        for (key, state) in writes {
            let applied = match state {
                Some(kv) => writer.put(&PutRequest {
                    lease: kv.lease,
                    ..PutRequest::new(key, kv.value)
                }),
                None => writer
                    .delete_range(&DeleteRangeRequest {
                        range: KeyRange::Key(key),
                        prev_kv: false,
                    })
                    .map(|_| Default::default()),
            };
            applied.map_err(|error| match error {
                Error::Kv(refusal) => {
                    panic!("a plugin write the call's transaction accepted was refused: {refusal}")
                }
                storage => storage,
            })?;
        }
        let revision = writer.finish();
        Ok(PluginCallResponse {
            revision,
            output,
            logs,
        })
    }

    /// Runs a call that may not write against the newest applied state, outside the log: the
    /// caller makes the read linearizable first if it must be. `now_ms` is the serving member's
    /// clock; the call sees it unless the log's clock is ahead.
    pub fn call_read_only(
        &self,
        request: &PluginCallRequest,
        now_ms: u64,
    ) -> Result<PluginCallResponse, Error> {
        crate::validate::plugin_call(request)?;
        let mut context = self.call_context(request);
        context.now_ms = context.now_ms.max(now_ms);
        // Read-only calls between two entries would otherwise share the entry's seed.
        context.seed ^= now_ms.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let prepared = self.prepare_call(request)?;
        let mut txn = CallTxn::new(self, context, &prepared.record.manifest.prefixes, false);
        let output = prepared.run(request, &mut txn)?;
        let (_, logs) = txn.into_writes();
        Ok(PluginCallResponse {
            revision: self.revision(),
            output,
            logs,
        })
    }

    /// Asks every validator bound to a prefix that `writes` touch; the first rejection refuses
    /// the request. A validator that fails (traps, runs out of fuel) rejects too: a hook that
    /// cannot say yes says no.
    pub(crate) fn run_validators(&self, writes: &[ProposedWrite]) -> Result<(), Error> {
        if writes.is_empty() || !self.plugins.has_hooks() {
            return Ok(());
        }
        for (prefix, record) in self.plugins.hooks() {
            let subset: Vec<ProposedWrite> = writes
                .iter()
                .filter(|w| w.key.starts_with(prefix))
                .cloned()
                .collect();
            if subset.is_empty() {
                continue;
            }
            let runtime = self.runtime()?;
            same_engine(&record.name, &record.engine, runtime.as_ref());
            let component = self.plugins.component(record);
            let plugin = LoadedPlugin {
                digest: record.digest,
                component: &component,
                limits: record.manifest.limits,
            };
            let context = CallContext {
                caller: String::new(),
                lease: NO_LEASE,
                ..self.entry_context()
            };
            let mut txn = CallTxn::new(self, context, &record.manifest.prefixes, false);
            let rejection = match runtime.validate(&plugin, &subset, &mut txn) {
                Ok(Ok(())) => continue,
                Ok(Err(reason)) => reason,
                Err(PluginFailure::Storage(error)) => return Err(error.into()),
                Err(PluginFailure::Runtime(reason)) => {
                    return Err(StorageError::PluginRuntime(reason).into());
                }
                Err(failure) => format!("the validator failed: {failure}"),
            };
            return Err(KvError::Rejected {
                plugin: record.name.clone(),
                reason: rejection,
            }
            .into());
        }
        Ok(())
    }

    /// Whether a validator is bound to a prefix that `range` reaches: only then does a delete
    /// need its keys listed for validation.
    pub(crate) fn hooks_reach(&self, range: &KeyRange) -> bool {
        self.plugins
            .hooks()
            .any(|(prefix, _)| crate::plugin::overlaps_prefix(range, prefix))
    }

    fn prepare_call(&self, request: &PluginCallRequest) -> Result<PreparedCall, Error> {
        let runtime = self.runtime()?;
        let record = self
            .plugins
            .get(&request.name)
            .ok_or_else(|| KvError::PluginNotFound(request.name.clone()))?;
        if request.lease != NO_LEASE && self.lease_ttl(request.lease).is_none() {
            return Err(KvError::LeaseNotFound.into());
        }
        same_engine(&record.name, &record.engine, runtime.as_ref());
        if !record.exports.recipe {
            return Err(failed(
                request,
                &PluginFailure::NoSuchFunction(request.function.clone()),
                "it exports no cairn:plugin/recipe interface",
            ));
        }
        Ok(PreparedCall {
            runtime,
            component: self.plugins.component(record),
            record: record.clone(),
        })
    }

    fn call_context(&self, request: &PluginCallRequest) -> CallContext {
        CallContext {
            caller: request.caller.clone(),
            lease: request.lease,
            ..self.entry_context()
        }
    }

    /// Replaces (or adds) a plugin's record; returns the one it replaced.
    fn put_record(&mut self, record: PluginRecord) -> Option<PluginRecord> {
        self.pending
            .plugins
            .records
            .insert(record.name.clone(), Some(record.clone()));
        self.pending.state_changed = true;
        let replaced = self.plugins.insert(record);
        if let Some(old) = &replaced {
            self.forget_unused_component(old.digest);
        }
        replaced
    }

    fn forget_unused_component(&mut self, digest: Digest) {
        if self.plugins.records.values().all(|r| r.digest != digest) {
            self.plugins.components.remove(&digest);
            self.pending.plugins.components.insert(digest, None);
        }
    }

    fn runtime(&self) -> Result<Arc<dyn PluginRuntime>, KvError> {
        self.plugin_runtime.clone().ok_or(KvError::PluginsDisabled)
    }
}

/// A replica must not run a plugin on another engine than the one it was deployed on, since the
/// outcome could differ: stopping is the only answer that keeps every replica's state equal.
fn same_engine(plugin: &str, deployed_on: &str, runtime: &dyn PluginRuntime) {
    assert_eq!(
        deployed_on,
        runtime.engine(),
        "plugin {plugin} was deployed on {deployed_on}; this member runs {}: run one Cairn build \
         per cluster",
        runtime.engine()
    );
}

fn failed(request: &PluginCallRequest, failure: &PluginFailure, reason: &str) -> Error {
    let kind = match failure {
        PluginFailure::Returned(_) => PluginFailureKind::Returned,
        PluginFailure::NoSuchFunction(_) => PluginFailureKind::NoSuchFunction,
        PluginFailure::Trap(_) => PluginFailureKind::Trap,
        PluginFailure::OutOfFuel(_)
        | PluginFailure::MemoryLimit(_)
        | PluginFailure::OutputTooLarge { .. } => PluginFailureKind::Limit,
        PluginFailure::Storage(_) | PluginFailure::Runtime(_) => {
            unreachable!("failures of the member are not call results")
        }
    };
    KvError::PluginFailed {
        plugin: request.name.clone(),
        function: request.function.clone(),
        kind,
        reason: reason.to_string(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Exports, HostError, Manifest, PluginHost, PluginRuntime};
    use crate::types::{Command, CommandResponse, RangeRequest, RequestOp, TxnRequest};
    use crate::validate::Limits;

    /// Runs "components" whose bytes name their behaviour, so the kernel's side of plugins
    /// (transactions, grants, validation, atomicity) is tested without wasmtime.
    struct ScriptedRuntime;

    impl PluginRuntime for ScriptedRuntime {
        fn engine(&self) -> &str {
            "scripted 1"
        }

        fn load(&self, _digest: Digest, component: &[u8]) -> Result<Exports, String> {
            match component {
                b"recipe" => Ok(Exports {
                    recipe: true,
                    validator: false,
                }),
                b"validator" => Ok(Exports {
                    recipe: false,
                    validator: true,
                }),
                _ => Err("it imports wasi:cli/environment@0.2.0".into()),
            }
        }

        /// `put`: input "key=value" puts; `put_then_fail`: puts, then returns an error; `read`:
        /// returns the value at the input key; `delete`: deletes the input key.
        fn call(
            &self,
            _plugin: &LoadedPlugin<'_>,
            function: &str,
            input: &[u8],
            host: &mut dyn PluginHost,
        ) -> Result<Vec<u8>, PluginFailure> {
            let text = String::from_utf8(input.to_vec()).unwrap();
            let refused = |e: HostError| PluginFailure::Returned(e.to_string());
            match function {
                "put" | "put_then_fail" => {
                    for pair in text.split(',') {
                        let (key, value) = pair.split_once('=').unwrap();
                        host.put(key.into(), value.into(), NO_LEASE)
                            .map_err(refused)?;
                    }
                    host.log(format!("wrote {text}"));
                    if function == "put_then_fail" {
                        return Err(PluginFailure::Trap("unreachable".into()));
                    }
                    Ok(Vec::new())
                }
                "now" => Ok(host.context().now_ms.to_string().into_bytes()),
                "read" => Ok(host
                    .get(text.as_bytes())
                    .map_err(refused)?
                    .map(|kv| kv.value)
                    .unwrap_or_default()),
                "delete" => {
                    let deleted = host
                        .delete_range(&KeyRange::Key(text.into_bytes()), u32::MAX)
                        .map_err(refused)?
                        .expect("one key is never more than the most");
                    Ok(deleted.to_string().into_bytes())
                }
                other => Err(PluginFailure::Returned(format!("unknown function {other}"))),
            }
        }

        /// Rejects any value containing "bad".
        fn validate(
            &self,
            _plugin: &LoadedPlugin<'_>,
            writes: &[ProposedWrite],
            _host: &mut dyn PluginHost,
        ) -> Result<Result<(), String>, PluginFailure> {
            for write in writes {
                if write
                    .value
                    .as_ref()
                    .is_some_and(|v| v.windows(3).any(|w| w == b"bad"))
                {
                    let key = String::from_utf8_lossy(&write.key);
                    return Ok(Err(format!("{key}: bad value")));
                }
            }
            Ok(Ok(()))
        }
    }

    struct Store {
        _dir: tempfile::TempDir,
        kernel: Kernel,
        index: u64,
    }

    impl Store {
        fn new() -> Store {
            let dir = tempfile::tempdir().unwrap();
            let mut kernel = Kernel::open(dir.path(), Limits::default()).unwrap();
            kernel.set_plugin_runtime(Arc::new(ScriptedRuntime));
            Store {
                _dir: dir,
                kernel,
                index: 0,
            }
        }

        fn apply(&mut self, command: Command) -> Result<CommandResponse, Error> {
            self.index += 1;
            let applied = self.kernel.apply(self.index, &command);
            self.kernel.commit(crate::Durability::Buffered).unwrap();
            applied
        }

        fn deploy(&mut self, name: &str, component: &[u8], prefixes: &[&str], hooks: &[&str]) {
            self.apply(Command::PluginDeploy(PluginDeployRequest {
                name: name.into(),
                version: "1".into(),
                component: component.to_vec(),
                manifest: Manifest {
                    prefixes: prefixes.iter().map(|p| p.as_bytes().to_vec()).collect(),
                    hooks: hooks.iter().map(|p| p.as_bytes().to_vec()).collect(),
                    ..Manifest::default()
                },
                engine: "scripted 1".into(),
            }))
            .unwrap();
        }

        fn call(&mut self, function: &str, input: &str) -> Result<PluginCallResponse, Error> {
            match self.apply(Command::PluginCall(PluginCallRequest {
                name: "recipe".into(),
                function: function.into(),
                input: input.as_bytes().to_vec(),
                caller: String::new(),
                lease: NO_LEASE,
            }))? {
                CommandResponse::PluginCall(called) => Ok(called),
                other => panic!("{other:?}"),
            }
        }

        fn value(&self, key: &str) -> Option<String> {
            let read = self
                .kernel
                .range(&RangeRequest::new(KeyRange::Key(key.into())))
                .unwrap();
            read.kvs
                .first()
                .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
        }
    }

    fn refusal(result: Result<impl std::fmt::Debug, Error>) -> KvError {
        match result {
            Err(Error::Kv(error)) => error,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_call_commits_its_writes_at_one_revision_or_none_of_them() {
        let mut store = Store::new();
        store.deploy("recipe", b"recipe", &["a/"], &[]);
        let before = store.kernel.revision();
        let called = store.call("put", "a/1=x,a/2=y").unwrap();
        assert_eq!(called.revision, before + 1);
        assert_eq!(called.logs, vec!["wrote a/1=x,a/2=y".to_string()]);
        assert_eq!(store.value("a/1").as_deref(), Some("x"));
        assert_eq!(store.value("a/2").as_deref(), Some("y"));

        let failed = refusal(store.call("put_then_fail", "a/1=lost,a/3=lost"));
        assert!(matches!(
            failed,
            KvError::PluginFailed {
                kind: PluginFailureKind::Trap,
                ..
            }
        ));
        assert_eq!(store.kernel.revision(), before + 1);
        assert_eq!(store.value("a/1").as_deref(), Some("x"));
        assert_eq!(store.value("a/3"), None);
        assert!(
            store.kernel.take_events().len() == 2,
            "only the committed call's events"
        );
    }

    #[test]
    fn a_call_sees_its_own_writes_and_only_granted_keys() {
        let mut store = Store::new();
        store.deploy("recipe", b"recipe", &["a/"], &[]);
        store.call("put", "a/k=v").unwrap();
        assert_eq!(store.call("read", "a/k").unwrap().output, b"v");
        let denied = refusal(store.call("put", "b/k=v"));
        assert!(
            denied.to_string().contains("outside the granted prefixes"),
            "{denied}"
        );
        assert_eq!(store.value("b/k"), None);
        assert_eq!(store.call("delete", "a/k").unwrap().output, b"1");
        assert_eq!(store.value("a/k"), None);
        let read_only = store
            .kernel
            .call_read_only(
                &PluginCallRequest {
                    name: "recipe".into(),
                    function: "put".into(),
                    input: b"a/z=1".to_vec(),
                    caller: String::new(),
                    lease: NO_LEASE,
                },
                0,
            )
            .unwrap_err();
        assert!(
            read_only.to_string().contains("may not write"),
            "{read_only}"
        );
    }

    #[test]
    fn the_clock_calls_see_never_goes_back_even_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = |kernel: &mut Kernel, index: u64, time_ms: u64| {
            let call = Command::PluginCall(PluginCallRequest {
                name: "recipe".into(),
                function: "now".into(),
                input: Vec::new(),
                caller: String::new(),
                lease: NO_LEASE,
            });
            let applied = kernel.apply_batch(index, time_ms, &[call]).unwrap();
            kernel.commit(crate::Durability::Fsync).unwrap();
            match applied.into_iter().next().unwrap().unwrap() {
                CommandResponse::PluginCall(called) => String::from_utf8(called.output).unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let mut kernel = Kernel::open(dir.path(), Limits::default()).unwrap();
        kernel.set_plugin_runtime(Arc::new(ScriptedRuntime));
        let deploy = Command::PluginDeploy(PluginDeployRequest {
            name: "recipe".into(),
            version: "1".into(),
            component: b"recipe".to_vec(),
            manifest: Manifest::default(),
            engine: "scripted 1".into(),
        });
        kernel.apply_batch(1, 0, &[deploy]).unwrap();
        assert_eq!(now(&mut kernel, 2, 5_000), "5000");
        // A new leader whose clock is behind.
        assert_eq!(now(&mut kernel, 3, 4_000), "5000");
        drop(kernel);
        let mut kernel = Kernel::open(dir.path(), Limits::default()).unwrap();
        kernel.set_plugin_runtime(Arc::new(ScriptedRuntime));
        assert_eq!(now(&mut kernel, 4, 4_500), "5000");
        assert_eq!(now(&mut kernel, 5, 6_000), "6000");
    }

    #[test]
    #[should_panic(expected = "run one Cairn build per cluster")]
    fn a_member_on_another_engine_stops_rather_than_diverge() {
        let mut store = Store::new();
        let _ = store.apply(Command::PluginDeploy(PluginDeployRequest {
            name: "recipe".into(),
            version: "1".into(),
            component: b"recipe".to_vec(),
            manifest: Manifest::default(),
            engine: "wasmtime 0.0.1 x86_64".into(),
        }));
    }

    #[test]
    fn oversized_plugin_requests_are_refused_before_they_run() {
        let mut store = Store::new();
        store.deploy("recipe", b"recipe", &["a/"], &[]);
        let long = "f".repeat(crate::validate::PLUGIN_FUNCTION_BYTES_MAX + 1);
        assert!(matches!(
            refusal(store.call(&long, "")),
            KvError::PluginRefused(_)
        ));
        let bind = Command::PluginBind(PluginBindRequest {
            name: "recipe".into(),
            prefix: vec![b'p'; crate::validate::PLUGIN_PREFIX_BYTES_MAX + 1],
            bound: true,
        });
        assert!(matches!(
            refusal(store.apply(bind)),
            KvError::PluginRefused(_)
        ));
        let deploy = Command::PluginDeploy(PluginDeployRequest {
            name: "big".into(),
            version: "1".into(),
            component: vec![0; crate::validate::COMPONENT_BYTES_MAX + 1],
            manifest: Manifest::default(),
            engine: "scripted 1".into(),
        });
        assert!(matches!(
            refusal(store.apply(deploy)),
            KvError::PluginRefused(_)
        ));
    }

    #[test]
    fn a_refused_component_deploys_nothing() {
        let mut store = Store::new();
        let refused = refusal(store.apply(Command::PluginDeploy(PluginDeployRequest {
            name: "wasi".into(),
            version: "1".into(),
            component: b"wasi".to_vec(),
            manifest: Manifest::default(),
            engine: "scripted 1".into(),
        })));
        assert!(
            refused.to_string().contains("wasi:cli/environment"),
            "{refused}"
        );
        assert!(store.kernel.plugins().is_empty());
    }

    #[test]
    fn validators_check_puts_deletes_txns_and_plugin_writes_under_their_prefix() {
        let mut store = Store::new();
        store.deploy("json", b"validator", &["c/"], &["c/"]);
        store.deploy("recipe", b"recipe", &["c/", "d/"], &[]);
        let put = |key: &str, value: &str| Command::Put(PutRequest::new(key, value));
        store.apply(put("c/ok", "good")).unwrap();
        store.apply(put("d/free", "bad")).unwrap();
        let rejected = refusal(store.apply(put("c/no", "bad")));
        assert_eq!(
            rejected,
            KvError::Rejected {
                plugin: "json".into(),
                reason: "c/no: bad value".into()
            }
        );
        let revision = store.kernel.revision();
        let txn = Command::Txn(TxnRequest {
            compare: Vec::new(),
            success: vec![
                RequestOp::Put(PutRequest::new("c/t1", "good")),
                RequestOp::Put(PutRequest::new("c/t2", "bad")),
            ],
            failure: Vec::new(),
        });
        assert!(matches!(
            refusal(store.apply(txn)),
            KvError::Rejected { .. }
        ));
        assert!(matches!(
            refusal(store.call("put", "c/p=bad")),
            KvError::Rejected { .. }
        ));
        assert_eq!(store.kernel.revision(), revision);
        assert_eq!(store.value("c/t1"), None);

        store
            .apply(Command::PluginBind(PluginBindRequest {
                name: "json".into(),
                prefix: b"c/".to_vec(),
                bound: false,
            }))
            .unwrap();
        store.apply(put("c/no", "bad")).unwrap();
    }

    #[test]
    fn plugins_survive_a_reopen_and_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut kernel = Kernel::open(dir.path(), Limits::default()).unwrap();
        kernel.set_plugin_runtime(Arc::new(ScriptedRuntime));
        kernel
            .apply(
                1,
                &Command::PluginDeploy(PluginDeployRequest {
                    name: "recipe".into(),
                    version: "7".into(),
                    component: b"recipe".to_vec(),
                    manifest: Manifest::default(),
                    engine: "scripted 1".into(),
                }),
            )
            .unwrap();
        kernel.commit(crate::Durability::Fsync).unwrap();
        let deployed = kernel.plugins();
        assert_eq!(deployed[0].deployed_index, 1);

        let mut snapshot = Vec::new();
        let checkpoint = kernel.checkpoint(&dir.path().join("checkpoint")).unwrap();
        checkpoint.write_to(&mut snapshot).unwrap();
        drop(checkpoint);
        let restored_dir = tempfile::tempdir().unwrap();
        let restored = crate::snapshot::restore(
            &mut snapshot.as_slice(),
            &restored_dir.path().join("kernel"),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(restored.plugins(), deployed);

        drop(kernel);
        let reopened = Kernel::open(dir.path(), Limits::default()).unwrap();
        assert_eq!(reopened.plugins(), deployed);
    }
}
