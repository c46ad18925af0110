//! A [`PluginHost`] over a `BTreeMap`, so that a call can be timed in-process with nothing but
//! the runtime under it: no RocksDB, no transaction overlay, no manifest checks.
//!
//! It keeps what a plugin needs to behave as it would on a member (a key it puts is there for
//! the next call to get) and no more: every call reads at the same revision and writes at the
//! next, leases are not checked, and logged messages are dropped.

use std::collections::BTreeMap;

use cairn_kernel::plugin::{CallContext, HostError, PluginHost, at_most};
use cairn_kernel::{INITIAL_REVISION, KeyRange, KeyValue, LeaseId, NO_LEASE};

pub struct MemoryHost {
    context: CallContext,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
}

impl MemoryHost {
    pub fn new() -> MemoryHost {
        MemoryHost {
            context: CallContext {
                now_ms: 0,
                revision: INITIAL_REVISION,
                caller: String::new(),
                lease: NO_LEASE,
                seed: 0,
            },
            kvs: BTreeMap::new(),
        }
    }

    fn keys_in(&self, range: &KeyRange) -> impl Iterator<Item = &KeyValue> {
        self.kvs
            .range(range.start().to_vec()..)
            .map(|(_, kv)| kv)
            .take_while(|kv| range.contains(&kv.key))
    }
}

impl PluginHost for MemoryHost {
    fn context(&self) -> &CallContext {
        &self.context
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, HostError> {
        Ok(self.kvs.get(key).cloned())
    }

    fn range(&mut self, range: &KeyRange, limit: u32) -> Result<(Vec<KeyValue>, bool), HostError> {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let mut kvs: Vec<KeyValue> = self
            .keys_in(range)
            .take(limit.saturating_add(1))
            .cloned()
            .collect();
        let more = kvs.len() > limit;
        kvs.truncate(limit);
        Ok((kvs, more))
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, lease: LeaseId) -> Result<(), HostError> {
        let revision = self.context.revision + 1;
        let kv = self.kvs.entry(key.clone()).or_insert_with(|| KeyValue {
            key,
            create_revision: revision,
            ..KeyValue::default()
        });
        kv.value = value;
        kv.mod_revision = revision;
        kv.version += 1;
        kv.lease = lease;
        Ok(())
    }

    fn delete_range(&mut self, range: &KeyRange, most: u32) -> Result<Option<u32>, HostError> {
        let Some(doomed) = at_most(self.keys_in(range).map(|kv| kv.key.clone()), most) else {
            return Ok(None);
        };
        for key in &doomed {
            self.kvs.remove(key);
        }
        Ok(Some(doomed.len() as u32))
    }

    fn log(&mut self, _message: String) {}
}
