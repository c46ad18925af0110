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
            plugins.records.insert(record.name.clone(), record);
        }
        Ok(plugins)
    }

    pub fn records(&self) -> impl Iterator<Item = &PluginRecord> {
        self.records.values()
    }

    pub fn get(&self, name: &str) -> Option<&PluginRecord> {
        self.records.get(name)
    }

    /// Every validator binding as (prefix, plugin), in prefix then name order.
    fn hooks(&self) -> Vec<(&[u8], &PluginRecord)> {
        let mut hooks: Vec<(&[u8], &PluginRecord)> = self
            .records
            .values()
            .flat_map(|record| {
                record
                    .manifest
                    .hooks
                    .iter()
                    .map(move |prefix| (prefix.as_slice(), record))
            })
            .collect();
        hooks.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
        hooks
    }

    pub fn has_hooks(&self) -> bool {
        self.records.values().any(|r| !r.manifest.hooks.is_empty())
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
                "the manifest binds hooks but component {digest} does not export \
                 cairn:plugin/validator"
            ))
            .into());
        }
        let record = PluginRecord {
            name: request.name.clone(),
            version: request.version.clone(),
            digest,
            size: request.component.len() as u64,
            exports,
            manifest: request.manifest.clone(),
            deployed_index: self.applied_index(),
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
            .records
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
    /// clock.
    pub fn call_read_only(
        &self,
        request: &PluginCallRequest,
        now_ms: u64,
    ) -> Result<PluginCallResponse, Error> {
        crate::validate::plugin_name(&request.name)?;
        let mut context = self.call_context(request);
        context.now_ms = now_ms;
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

    /// Whether any validator is bound at all: requests skip validation entirely when none is.
    pub(crate) fn plugins_bound(&self) -> bool {
        self.plugins.has_hooks()
    }

    /// Whether a validator is bound to a prefix that `range` reaches: only then does a delete
    /// need its keys listed for validation.
    pub(crate) fn hooks_reach(&self, range: &KeyRange) -> bool {
        self.plugins.has_hooks()
            && self
                .plugins
                .hooks()
                .iter()
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
        let name = record.name.clone();
        self.pending
            .plugins
            .records
            .insert(name.clone(), Some(record.clone()));
        self.pending.state_changed = true;
        let replaced = self.plugins.records.insert(name, record);
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

fn failed(request: &PluginCallRequest, failure: &PluginFailure, reason: &str) -> Error {
    let kind = match failure {
        PluginFailure::Returned(_) => PluginFailureKind::Returned,
        PluginFailure::NoSuchFunction(_) => PluginFailureKind::NoSuchFunction,
        PluginFailure::Trap(_) => PluginFailureKind::Trap,
        PluginFailure::OutOfFuel(_)
        | PluginFailure::MemoryLimit(_)
        | PluginFailure::OutputTooLarge { .. } => PluginFailureKind::Limit,
        PluginFailure::Storage(_) => unreachable!("storage failures are not call results"),
    };
    KvError::PluginFailed {
        plugin: request.name.clone(),
        function: request.function.clone(),
        kind,
        reason: reason.to_string(),
    }
    .into()
}
