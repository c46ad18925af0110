//! The transaction a plugin call runs in.
//!
//! A call's writes stay in an overlay until the call returns: reads see the store at the call's
//! revision with the overlay on top, and the kernel applies the overlay only when the call
//! succeeds. A call that traps, runs out of fuel or returns an error therefore writes nothing,
//! whatever it did before.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::error::StorageError;
use crate::kernel::Kernel;
use crate::plugin::{
    CallContext, HostError, PluginHost, ProposedWrite, at_most, quoted_prefixes, within_prefix,
};
use crate::types::{KeyRange, KeyValue, LeaseId, NO_LEASE};

/// Most keys one range read returns, and about the most bytes of keys and values.
pub const RANGE_LIMIT_MAX: u32 = 10_000;
pub const RANGE_BYTES_MAX: usize = 4 << 20;
/// Most bytes of keys and values one call may write.
pub const WRITE_BYTES_MAX: usize = 8 << 20;
/// Most log messages a call keeps, and the longest one.
const LOG_MESSAGES_MAX: usize = 64;
const LOG_MESSAGE_BYTES_MAX: usize = 1024;

/// A key and its state after a call: `None` once deleted.
pub(crate) type KeyWrite = (Vec<u8>, Option<KeyValue>);

/// A plugin call's view of the store, confined to the prefixes its manifest grants.
pub(crate) struct CallTxn<'k> {
    kernel: &'k Kernel,
    context: CallContext,
    grants: &'k [Vec<u8>],
    writable: bool,
    /// Each key the call wrote, with its new state: `None` once deleted.
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    write_bytes: usize,
    logs: Vec<String>,
}

/// Where a key's current state comes from during a call.
enum Current<'a> {
    Stored(crate::storage::ChangeId),
    Written(&'a KeyValue),
}

impl<'k> CallTxn<'k> {
    pub fn new(
        kernel: &'k Kernel,
        context: CallContext,
        grants: &'k [Vec<u8>],
        writable: bool,
    ) -> CallTxn<'k> {
        CallTxn {
            kernel,
            context,
            grants,
            writable,
            overlay: BTreeMap::new(),
            write_bytes: 0,
            logs: Vec::new(),
        }
    }

    /// The call's writes in key order: each key's final state, `None` for a delete. Deletes of
    /// keys that did not exist before the call are left out.
    pub fn into_writes(self) -> (Vec<KeyWrite>, Vec<String>) {
        let revision = self.context.revision;
        let mut writes = Vec::with_capacity(self.overlay.len());
        for (key, state) in self.overlay {
            let existed = || self.kernel.index().visible_key(&key, revision).is_some();
            if state.is_some() || existed() {
                writes.push((key, state));
            }
        }
        (writes, self.logs)
    }

    fn check_granted(&self, range: &KeyRange) -> Result<(), HostError> {
        if self
            .grants
            .iter()
            .any(|prefix| within_prefix(range, prefix))
        {
            return Ok(());
        }
        Err(HostError::Denied(format!(
            "{} is outside the granted prefixes [{}]",
            describe(range),
            quoted_prefixes(self.grants)
        )))
    }

    /// Every live key of `range` in key order, with where its state comes from: the store's keys
    /// at the call's revision, merged with the call's own writes, which win. Lazy, so a read that
    /// stops at its limit walks no further into a range however large.
    fn current<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> impl Iterator<Item = (&'a [u8], Current<'a>)> + 'a {
        let mut stored = self
            .kernel
            .index()
            .visible(range, self.context.revision)
            .peekable();
        let mut written = self.overlay_in(range).peekable();
        std::iter::from_fn(move || {
            loop {
                let written_first = match (stored.peek(), written.peek()) {
                    (None, None) => return None,
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                    (Some((stored_key, _)), Some((written_key, _))) => {
                        let order = written_key.as_slice().cmp(stored_key);
                        if order == Ordering::Equal {
                            // The call's write replaces the stored state.
                            stored.next();
                        }
                        order != Ordering::Greater
                    }
                };
                if !written_first {
                    let (key, id) = stored.next().expect("peeked");
                    return Some((key, Current::Stored(id)));
                }
                // A key this call deleted is not live: go on to the next.
                if let (key, Some(kv)) = written.next().expect("peeked") {
                    return Some((key.as_slice(), Current::Written(kv)));
                }
            }
        })
    }

    fn overlay_in<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Option<KeyValue>)> + 'a {
        let start = range.start().to_vec();
        self.overlay
            .range(start..)
            .take_while(move |(key, _)| match range {
                KeyRange::Key(only) => key == &only,
                KeyRange::Interval { end, .. } => key.as_slice() < end.as_slice(),
                KeyRange::From(_) => true,
            })
    }

    fn load(&self, current: Current<'_>) -> Result<KeyValue, StorageError> {
        match current {
            Current::Stored(id) => self.kernel.load(id),
            Current::Written(kv) => Ok(kv.clone()),
        }
    }

    fn stored(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        self.kernel.key_at(key, self.context.revision)
    }

    fn check_writable(&self) -> Result<(), HostError> {
        if self.writable {
            Ok(())
        } else {
            Err(HostError::ReadOnly)
        }
    }
}

impl PluginHost for CallTxn<'_> {
    fn context(&self) -> &CallContext {
        &self.context
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, HostError> {
        let range = KeyRange::Key(key.to_vec());
        self.check_granted(&range)?;
        match self.current(&range).next() {
            Some((_, current)) => Ok(Some(self.load(current)?)),
            None => Ok(None),
        }
    }

    fn range(&mut self, range: &KeyRange, limit: u32) -> Result<(Vec<KeyValue>, bool), HostError> {
        self.check_granted(range)?;
        let limit = match limit {
            0 => RANGE_LIMIT_MAX,
            n => n.min(RANGE_LIMIT_MAX),
        } as usize;
        let mut current = self.current(range);
        let mut kvs = Vec::new();
        let mut bytes = 0;
        // A read cut short by size says so the way a limit does: `more`, for the caller to go on
        // from its last key.
        let more = loop {
            let Some((_, state)) = current.next() else {
                break false;
            };
            if kvs.len() >= limit || bytes >= RANGE_BYTES_MAX {
                break true;
            }
            let kv = self.load(state)?;
            bytes += kv.key.len() + kv.value.len();
            kvs.push(kv);
        };
        Ok((kvs, more))
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, lease: LeaseId) -> Result<(), HostError> {
        self.check_writable()?;
        if key.is_empty() {
            return Err(HostError::Denied("a key may not be empty".into()));
        }
        self.check_granted(&KeyRange::Key(key.clone()))?;
        if lease != NO_LEASE && self.kernel.lease_ttl(lease).is_none() {
            return Err(HostError::LeaseNotFound(lease));
        }
        self.write_bytes += key.len() + value.len();
        if self.write_bytes > WRITE_BYTES_MAX {
            return Err(HostError::TooLarge(format!(
                "a call may write at most {WRITE_BYTES_MAX} bytes of keys and values"
            )));
        }
        let revision = self.context.revision + 1;
        let previous = self.stored(&key)?;
        let kv = KeyValue {
            key: key.clone(),
            create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.overlay.insert(key, Some(kv));
        Ok(())
    }

    fn delete_range(&mut self, range: &KeyRange, most: u32) -> Result<Option<u32>, HostError> {
        self.check_writable()?;
        self.check_granted(range)?;
        let Some(doomed) = at_most(self.current(range).map(|(key, _)| key.to_vec()), most) else {
            return Ok(None);
        };
        let deleted = doomed.len() as u32;
        for key in doomed {
            self.overlay.insert(key, None);
        }
        Ok(Some(deleted))
    }

    fn log(&mut self, mut message: String) {
        if self.logs.len() >= LOG_MESSAGES_MAX {
            return;
        }
        if message.len() > LOG_MESSAGE_BYTES_MAX {
            let mut end = LOG_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.logs.push(message);
    }
}

/// Writes as a validator is shown them.
pub(crate) fn proposed(writes: &[KeyWrite]) -> Vec<ProposedWrite> {
    writes
        .iter()
        .map(|(key, state)| ProposedWrite {
            key: key.clone(),
            value: state.as_ref().map(|kv| kv.value.clone()),
        })
        .collect()
}

fn describe(range: &KeyRange) -> String {
    match range {
        KeyRange::Key(key) => format!("key {:?}", String::from_utf8_lossy(key)),
        KeyRange::Interval { start, end } => format!(
            "range [{:?}, {:?})",
            String::from_utf8_lossy(start),
            String::from_utf8_lossy(end)
        ),
        KeyRange::From(start) if start.is_empty() => "every key".into(),
        KeyRange::From(start) => format!("every key from {:?}", String::from_utf8_lossy(start)),
    }
}

#[cfg(test)]
mod tests {
    use super::CallTxn;
    use crate::kernel::Kernel;
    use crate::plugin::{CallContext, PluginHost};
    use crate::types::{Command, KeyRange, NO_LEASE, PutRequest};
    use crate::{Durability, Limits};

    /// A kernel holding `a/1` to `a/5`, each with the value `stored`.
    fn kernel_with_five_keys(dir: &std::path::Path) -> Kernel {
        let mut kernel = Kernel::open(dir, Limits::default()).unwrap();
        for (index, key) in (1..).zip(["a/1", "a/2", "a/3", "a/4", "a/5"]) {
            kernel
                .apply(index, &Command::Put(PutRequest::new(key, "stored")))
                .unwrap();
        }
        kernel.commit(Durability::Buffered).unwrap();
        kernel
    }

    fn read(txn: &mut CallTxn, limit: u32) -> (Vec<String>, bool) {
        let range = KeyRange::Interval {
            start: b"a/".to_vec(),
            end: b"a0".to_vec(),
        };
        let (kvs, more) = txn.range(&range, limit).unwrap();
        let kvs = kvs
            .into_iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    String::from_utf8(kv.key).unwrap(),
                    String::from_utf8(kv.value).unwrap()
                )
            })
            .collect();
        (kvs, more)
    }

    fn context(kernel: &Kernel) -> CallContext {
        CallContext {
            now_ms: 0,
            revision: kernel.revision(),
            caller: String::new(),
            lease: NO_LEASE,
            seed: 0,
        }
    }

    #[test]
    fn a_delete_of_more_keys_than_it_may_remove_removes_none() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = kernel_with_five_keys(dir.path());
        let grants = [b"a/".to_vec()];
        let mut txn = CallTxn::new(&kernel, context(&kernel), &grants, true);
        txn.put(b"a/6".to_vec(), b"new".to_vec(), NO_LEASE).unwrap();
        let every_key = KeyRange::Interval {
            start: b"a/".to_vec(),
            end: b"a0".to_vec(),
        };
        assert_eq!(txn.delete_range(&every_key, 5).unwrap(), None);
        assert_eq!(read(&mut txn, 0).0.len(), 6, "a key was deleted");
        assert_eq!(txn.delete_range(&every_key, 6).unwrap(), Some(6));
        assert_eq!(read(&mut txn, 0), (Vec::new(), false));
    }

    #[test]
    fn a_range_merges_the_calls_writes_over_the_store_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = kernel_with_five_keys(dir.path());
        let grants = [b"a/".to_vec()];
        let mut txn = CallTxn::new(&kernel, context(&kernel), &grants, true);
        txn.put(b"a/2".to_vec(), b"new".to_vec(), NO_LEASE).unwrap();
        txn.put(b"a/25".to_vec(), b"new".to_vec(), NO_LEASE)
            .unwrap();
        txn.put(b"a/0".to_vec(), b"new".to_vec(), NO_LEASE).unwrap();
        assert_eq!(
            txn.delete_range(&KeyRange::Key(b"a/4".to_vec()), u32::MAX)
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            txn.delete_range(&KeyRange::Key(b"a/5".to_vec()), 1)
                .unwrap(),
            Some(1)
        );
        let all = ["a/0=new", "a/1=stored", "a/2=new", "a/25=new", "a/3=stored"];
        assert_eq!(read(&mut txn, 0), (all.map(String::from).to_vec(), false));
        assert_eq!(
            read(&mut txn, 2),
            (all[..2].iter().map(|s| s.to_string()).collect(), true)
        );
        // Exactly the live keys: the deleted ones after them are not more.
        assert_eq!(read(&mut txn, 5), (all.map(String::from).to_vec(), false));
        assert_eq!(
            txn.get(b"a/4").unwrap(),
            None,
            "a key the call deleted is gone for it"
        );
        assert_eq!(txn.get(b"a/3").unwrap().unwrap().value, b"stored");
    }
}
