//! Transactions with etcd's semantics.
//!
//! etcd evaluates a txn in phases, and clients can observe the order, so Cairn keeps it:
//! 1. every compare on the taken path, nested txns included, against the state before the txn;
//! 2. the puts on that path (ignore_value and ignore_lease need the key; a lease must exist);
//! 3. the ranges on that path (no future and no compacted revision);
//! 4. the validators bound to the keys the path writes (Cairn's own phase);
//! 5. the operations, in order, each seeing the writes before it, all at one new revision.
//!
//! Only phases 1 to 4 may refuse the txn, and they write nothing, so a refused txn leaves no
//! trace.

use std::collections::BTreeMap;

use crate::error::{Error, KvError, StorageError};
use crate::kernel::{Kernel, Writer};
use crate::plugin::ProposedWrite;
use crate::types::{
    Compare, CompareResult, CompareTarget, KeyValue, NO_LEASE, RequestOp, ResponseOp, TxnRequest,
    TxnResponse,
};

/// Which branch each txn on the taken path takes: the outer txn's, then those of the nested txns
/// in the taken branch, in order.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

impl Path {
    /// The taken branch, each op paired with the path of the nested txn it is, if it is one.
    fn ops<'t>(
        &'t self,
        txn: &'t TxnRequest,
    ) -> impl Iterator<Item = (&'t RequestOp, Option<&'t Path>)> {
        let branch = if self.succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut nested = self.nested.iter();
        branch.iter().map(move |op| {
            let path = matches!(op, RequestOp::Txn(_))
                .then(|| nested.next().expect("a path per nested txn"));
            (op, path)
        })
    }
}

impl Kernel {
    pub(crate) fn txn(&mut self, txn: &TxnRequest) -> Result<TxnResponse, Error> {
        let path = self.path(txn)?;
        self.check_puts(txn, &path)?;
        self.check_ranges(txn, &path)?;
        self.validate_writes(txn, &path)?;
        let mut writer = Writer::new(self);
        let mut response = run(&mut writer, txn, &path)?;
        response.revision = writer.finish();
        Ok(response)
    }

    fn path(&self, txn: &TxnRequest) -> Result<Path, StorageError> {
        let mut succeeded = true;
        for compare in &txn.compare {
            if !self.compare_holds(compare)? {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let nested = branch
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(nested) => Some(self.path(nested)),
                _ => None,
            })
            .collect::<Result<_, _>>()?;
        Ok(Path { succeeded, nested })
    }

    /// A compare holds when it holds for every key in its range. Over no keys it is judged against
    /// an absent key (all zeros), except a value compare, which then fails: etcd cannot tell an
    /// empty value from a missing one on the wire.
    fn compare_holds(&self, compare: &Compare) -> Result<bool, StorageError> {
        let mut visible = self
            .index()
            .visible(&compare.range, self.revision())
            .peekable();
        if visible.peek().is_none() {
            return Ok(!matches!(compare.target, CompareTarget::Value(_))
                && compare_kv(compare, &KeyValue::default()));
        }
        for (_, id) in visible {
            if !compare_kv(compare, &self.load(id)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn check_puts(&self, txn: &TxnRequest, path: &Path) -> Result<(), KvError> {
        for (op, nested) in path.ops(txn) {
            match (op, nested) {
                (RequestOp::Txn(inner), Some(inner_path)) => self.check_puts(inner, inner_path)?,
                (RequestOp::Put(put), _) => {
                    let exists = self
                        .index()
                        .visible_key(&put.key, self.revision())
                        .is_some();
                    if (put.ignore_value || put.ignore_lease) && !exists {
                        return Err(KvError::KeyNotFound);
                    }
                    if put.lease != NO_LEASE && self.lease_ttl(put.lease).is_none() {
                        return Err(KvError::LeaseNotFound);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Shows the validators bound to the keys the path writes those writes. etcd's rules leave
    /// no key both put and deleted on one path, so each key's new state is known before any op
    /// runs.
    fn validate_writes(&self, txn: &TxnRequest, path: &Path) -> Result<(), Error> {
        let mut writes = BTreeMap::new();
        // Requests skip validation entirely when no validator is bound.
        if self.plugins.has_hooks() {
            self.planned_writes(txn, path, &mut writes)?;
        }
        let writes: Vec<ProposedWrite> = writes
            .into_iter()
            .map(|(key, value)| ProposedWrite { key, value })
            .collect();
        self.run_validators(&writes)
    }

    fn planned_writes(
        &self,
        txn: &TxnRequest,
        path: &Path,
        writes: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        for (op, nested) in path.ops(txn) {
            match (op, nested) {
                (RequestOp::Txn(inner), Some(inner_path)) => {
                    self.planned_writes(inner, inner_path, writes)?
                }
                (RequestOp::Put(put), _) => {
                    let value = if put.ignore_value {
                        self.key_at(&put.key, self.revision())?.map(|kv| kv.value)
                    } else {
                        Some(put.value.clone())
                    };
                    writes.insert(put.key.clone(), value);
                }
                (RequestOp::DeleteRange(delete), _) if self.hooks_reach(&delete.range) => {
                    for (key, _) in self.index().visible(&delete.range, self.revision()) {
                        writes.insert(key.to_vec(), None);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// etcd checks an explicit range revision against the store before the txn, comparing with
    /// `==` 0 rather than `<=` 0, so a negative revision before any compaction counts as compacted.
    fn check_ranges(&self, txn: &TxnRequest, path: &Path) -> Result<(), KvError> {
        for (op, nested) in path.ops(txn) {
            match (op, nested) {
                (RequestOp::Txn(inner), Some(inner_path)) => {
                    self.check_ranges(inner, inner_path)?
                }
                (RequestOp::Range(range), _) if range.revision != 0 => {
                    if range.revision > self.revision() {
                        return Err(KvError::FutureRevision);
                    }
                    if range.revision < self.compact_revision() {
                        return Err(KvError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn run(writer: &mut Writer, txn: &TxnRequest, path: &Path) -> Result<TxnResponse, StorageError> {
    let mut responses = Vec::new();
    for (op, nested) in path.ops(txn) {
        let response = match (op, nested) {
            (RequestOp::Range(range), _) => ResponseOp::Range(checked(writer.range(range))?),
            (RequestOp::Put(put), _) => ResponseOp::Put(checked(writer.put(put))?),
            (RequestOp::DeleteRange(delete), _) => {
                ResponseOp::DeleteRange(checked(writer.delete_range(delete))?)
            }
            (RequestOp::Txn(inner), Some(inner_path)) => {
                ResponseOp::Txn(run(writer, inner, inner_path)?)
            }
            (RequestOp::Txn(_), None) => {
                unreachable!("Path::ops pairs every nested txn with its path")
            }
        };
        responses.push(response);
    }
    Ok(TxnResponse {
        // Only the outermost txn's header carries a revision, as in etcd.
        revision: 0,
        succeeded: path.succeeded,
        responses,
    })
}

/// Operations run after the checks, which rule out every request error; one here would leave a
/// txn half-applied, so it is a bug, not a result.
fn checked<T>(result: Result<T, Error>) -> Result<T, StorageError> {
    match result {
        Ok(value) => Ok(value),
        Err(Error::Storage(error)) => Err(error),
        Err(Error::Kv(error)) => panic!("txn operation refused after its checks passed: {error}"),
    }
}

fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    let ordering = match &compare.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match compare.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}
