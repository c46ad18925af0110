//! Checks a request can fail without looking at the store, in etcd's order.
//!
//! The node runs them before a write enters the log, so malformed requests cost nothing; apply
//! runs them again, so the kernel gives etcd's answer for any command whatever its origin.

use std::collections::BTreeSet;

use crate::error::KvError;
use crate::plugin::{PluginCallRequest, PluginDeployRequest, PluginLimits};
use crate::types::{
    Command, DeleteRangeRequest, KeyRange, LEASE_TTL_MAX, LeaseGrantRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};

/// etcd's default for `--max-txn-ops`.
pub const TXN_OPS_MAX_DEFAULT: usize = 128;

/// Limits that apply to every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most compares, or most operations in one branch, of a txn at any depth.
    pub txn_ops_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            txn_ops_max: TXN_OPS_MAX_DEFAULT,
        }
    }
}

pub fn command(command: &Command, limits: &Limits) -> Result<(), KvError> {
    match command {
        Command::Put(put) => put_request(put),
        Command::DeleteRange(delete) => delete_request(delete),
        Command::Txn(txn) => txn_request(txn, limits),
        Command::Compact(_) | Command::LeaseRevoke(_) => Ok(()),
        Command::LeaseGrant(grant) => lease_grant(grant),
        Command::PluginDeploy(deploy) => plugin_deploy(deploy),
        Command::PluginRemove(remove) => plugin_name(&remove.name),
        Command::PluginBind(bind) => {
            plugin_name(&bind.name)?;
            plugin_prefix(&bind.prefix)
        }
        Command::PluginCall(call) => plugin_call(call),
    }
}

/// Largest component a deploy may carry: it travels in one log entry, which followers must take
/// in within one heartbeat interval.
pub const COMPONENT_BYTES_MAX: usize = 4 << 20;
/// Longest function name a call may give.
pub const PLUGIN_FUNCTION_BYTES_MAX: usize = 256;
/// Longest granted or bound prefix, and most prefixes of each kind in a manifest.
pub const PLUGIN_PREFIX_BYTES_MAX: usize = 4096;
pub const PLUGIN_PREFIXES_MAX: usize = 64;

fn plugin_prefix(prefix: &[u8]) -> Result<(), KvError> {
    if prefix.len() > PLUGIN_PREFIX_BYTES_MAX {
        return Err(KvError::PluginRefused(format!(
            "a prefix may be at most {PLUGIN_PREFIX_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

/// A plugin name is what a CLI user types: 1 to 64 of `a-z`, `0-9`, `-`, `_` and `.`.
pub fn plugin_name(name: &str) -> Result<(), KvError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(KvError::PluginRefused(format!(
            "invalid plugin name {name:?}: use 1 to 64 of a-z, 0-9, '-', '_' and '.'"
        )))
    }
}

pub fn plugin_call(call: &PluginCallRequest) -> Result<(), KvError> {
    plugin_name(&call.name)?;
    if call.function.len() > PLUGIN_FUNCTION_BYTES_MAX {
        return Err(KvError::PluginRefused(format!(
            "a function name may be at most {PLUGIN_FUNCTION_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

pub fn plugin_deploy(deploy: &PluginDeployRequest) -> Result<(), KvError> {
    plugin_name(&deploy.name)?;
    let refuse = |reason: String| Err(KvError::PluginRefused(reason));
    if deploy.version.is_empty() || deploy.version.len() > 64 {
        return refuse(format!(
            "invalid version {:?}: give 1 to 64 characters",
            deploy.version
        ));
    }
    if deploy.component.len() > COMPONENT_BYTES_MAX {
        return refuse(format!(
            "the component is {} bytes, over the limit of {COMPONENT_BYTES_MAX}",
            deploy.component.len()
        ));
    }
    for prefixes in [&deploy.manifest.prefixes, &deploy.manifest.hooks] {
        if prefixes.len() > PLUGIN_PREFIXES_MAX {
            return refuse(format!(
                "a manifest may name at most {PLUGIN_PREFIXES_MAX} prefixes and as many hooks"
            ));
        }
        prefixes
            .iter()
            .try_for_each(|prefix| plugin_prefix(prefix))?;
    }
    let limits = &deploy.manifest.limits;
    let checks = [
        ("fuel", limits.fuel, PluginLimits::FUEL_MAX),
        (
            "memory_bytes",
            limits.memory_bytes,
            PluginLimits::MEMORY_BYTES_MAX,
        ),
        (
            "output_bytes",
            limits.output_bytes,
            PluginLimits::OUTPUT_BYTES_MAX,
        ),
    ];
    for (name, value, max) in checks {
        if value == 0 || value > max {
            return refuse(format!("limit {name} = {value} is outside 1..={max}"));
        }
    }
    Ok(())
}

/// etcd refuses lease 0 (it means "no lease"; the receiving member picks an id for a client
/// that leaves it to the server) and TTLs beyond [`LEASE_TTL_MAX`].
pub fn lease_grant(grant: &LeaseGrantRequest) -> Result<(), KvError> {
    if grant.id == crate::types::NO_LEASE {
        return Err(KvError::LeaseNotFound);
    }
    if grant.ttl > LEASE_TTL_MAX {
        return Err(KvError::LeaseTtlTooLarge);
    }
    Ok(())
}

pub fn range_request(range: &RangeRequest) -> Result<(), KvError> {
    non_empty(range.range.start())
}

pub fn put_request(put: &PutRequest) -> Result<(), KvError> {
    non_empty(&put.key)?;
    if put.ignore_value && !put.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if put.ignore_lease && put.lease != crate::types::NO_LEASE {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

pub fn delete_request(delete: &DeleteRangeRequest) -> Result<(), KvError> {
    non_empty(delete.range.start())
}

/// Operation counts and per-op checks at every depth, then etcd's duplicate-key rules on each
/// branch of the outermost txn.
pub fn txn_request(txn: &TxnRequest, limits: &Limits) -> Result<(), KvError> {
    txn_shape(txn, limits)?;
    branch_writes(&txn.success)?;
    branch_writes(&txn.failure)?;
    Ok(())
}

fn txn_shape(txn: &TxnRequest, limits: &Limits) -> Result<(), KvError> {
    let ops = txn
        .compare
        .len()
        .max(txn.success.len())
        .max(txn.failure.len());
    if ops > limits.txn_ops_max {
        return Err(KvError::TooManyOps);
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(range) => range_request(range)?,
            RequestOp::Put(put) => put_request(put)?,
            RequestOp::DeleteRange(delete) => delete_request(delete)?,
            RequestOp::Txn(nested) => txn_shape(nested, limits)?,
        }
    }
    Ok(())
}

fn non_empty(key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// Keys a branch puts and ranges it deletes, including those of nested txns.
#[derive(Default)]
struct BranchWrites {
    puts: BTreeSet<Vec<u8>>,
    deletes: Vec<KeyRange>,
}

impl BranchWrites {
    /// Whether a delete in the branch covers `key`. etcd 3.4 compares against a `"\0"` range end
    /// literally, so it misses that such a delete covers every key from its start; it then
    /// accepts a txn that deletes a key and puts it with ignore_value or ignore_lease, and panics
    /// applying it. Cairn treats `"\0"` as "no upper bound" here too and refuses that txn.
    fn deletes_cover(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|range| match range {
            KeyRange::Key(k) => k.as_slice() == key,
            KeyRange::Interval { start, end } => start.as_slice() <= key && key < end.as_slice(),
            KeyRange::From(start) => start.as_slice() <= key,
        })
    }

    fn add_put(&mut self, key: &[u8]) -> Result<(), KvError> {
        if self.puts.contains(key) || self.deletes_cover(key) {
            return Err(KvError::DuplicateKey);
        }
        self.puts.insert(key.to_vec());
        Ok(())
    }
}

/// etcd's rule: within one branch no key is put twice, and no put key lies in a range deleted in
/// the same branch, counting nested txns; the two branches of a nested txn exclude each other, so
/// they may put the same key.
fn branch_writes(ops: &[RequestOp]) -> Result<BranchWrites, KvError> {
    let mut writes = BranchWrites::default();
    for op in ops {
        if let RequestOp::DeleteRange(delete) = op {
            writes.deletes.push(delete.range.clone());
        }
    }
    for op in ops {
        let RequestOp::Txn(nested) = op else { continue };
        let then_writes = branch_writes(&nested.success)?;
        let else_writes = branch_writes(&nested.failure)?;
        for key in &then_writes.puts {
            writes.add_put(key)?;
        }
        for key in &else_writes.puts {
            if then_writes.puts.contains(key) {
                continue;
            }
            writes.add_put(key)?;
        }
        writes.deletes.extend(then_writes.deletes);
        writes.deletes.extend(else_writes.deletes);
    }
    for op in ops {
        if let RequestOp::Put(put) = op {
            writes.add_put(&put.key)?;
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CompactRequest, DeleteRangeRequest};

    fn put(key: &str) -> RequestOp {
        RequestOp::Put(PutRequest::new(key, "v"))
    }

    fn delete(key: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            range: KeyRange::from_etcd(key.into(), end.into()),
            prev_kv: false,
        })
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    fn check(t: &TxnRequest) -> Result<(), KvError> {
        txn_request(t, &Limits::default())
    }

    #[test]
    fn two_puts_of_one_key_in_a_branch_are_duplicates() {
        assert_eq!(
            check(&txn(vec![put("a"), put("a")], vec![])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(check(&txn(vec![put("a")], vec![put("a")])), Ok(()));
    }

    #[test]
    fn a_put_inside_a_deleted_range_is_a_duplicate() {
        assert_eq!(
            check(&txn(vec![delete("a", "c"), put("b")], vec![])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            check(&txn(vec![delete("a", "c"), put("c")], vec![])),
            Ok(())
        );
        assert_eq!(
            check(&txn(vec![delete("b", ""), put("b")], vec![])),
            Err(KvError::DuplicateKey)
        );
        // Unlike etcd 3.4, which accepts this and can then crash applying it.
        assert_eq!(
            check(&txn(vec![delete("a", "\0"), put("b")], vec![])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            check(&txn(vec![delete("c", "\0"), put("b")], vec![])),
            Ok(())
        );
    }

    #[test]
    fn nested_branches_exclude_each_other_but_not_their_parent() {
        let nested = RequestOp::Txn(txn(vec![put("a")], vec![put("a")]));
        assert_eq!(check(&txn(vec![nested.clone()], vec![])), Ok(()));
        assert_eq!(
            check(&txn(vec![nested, put("a")], vec![])),
            Err(KvError::DuplicateKey)
        );
        let nested_delete = RequestOp::Txn(txn(vec![delete("a", "z")], vec![]));
        assert_eq!(
            check(&txn(vec![nested_delete, put("k")], vec![])),
            Err(KvError::DuplicateKey)
        );
    }

    #[test]
    fn op_counts_are_bounded_at_every_depth() {
        let limits = Limits { txn_ops_max: 2 };
        let wide = txn((0..3).map(|i| put(&i.to_string())).collect(), vec![]);
        assert_eq!(txn_request(&wide, &limits), Err(KvError::TooManyOps));
        let deep = txn(vec![RequestOp::Txn(wide)], vec![]);
        assert_eq!(txn_request(&deep, &limits), Err(KvError::TooManyOps));
    }

    #[test]
    fn put_options_are_checked_in_etcds_order() {
        let mut p = PutRequest::new("", "v");
        p.ignore_value = true;
        assert_eq!(put_request(&p), Err(KvError::EmptyKey));
        p.key = b"k".to_vec();
        assert_eq!(put_request(&p), Err(KvError::ValueProvided));
        p.value.clear();
        p.ignore_lease = true;
        p.lease = 7;
        assert_eq!(put_request(&p), Err(KvError::LeaseProvided));
        assert_eq!(
            command(
                &Command::Compact(CompactRequest { revision: 1 }),
                &Limits::default()
            ),
            Ok(())
        );
    }
}
