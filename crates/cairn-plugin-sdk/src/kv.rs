//! The store, seen through the call's transaction: reads see the call's own earlier writes, and
//! the writes commit together when the call succeeds, or not at all.
//!
//! Every key touched must lie inside a prefix the plugin's manifest grants; the host refuses the
//! rest with [`KvError::Denied`].

use crate::bindings::cairn::plugin::kv as host;
use crate::{KeyValue, RangeResult};

/// Why the host refused a kv operation. Its `Display` is what a plugin that gives up on it
/// (`map_err(|e| e.to_string())`) shows its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// The key or range lies outside the prefixes the manifest grants; the host names it.
    Denied(String),
    /// This call may not write: a read-only call, or a validator.
    ReadOnly,
    /// A put named a lease that does not exist.
    LeaseNotFound(i64),
    /// A key, value or result is over the server's limits; the host says which.
    TooLarge(String),
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::Denied(what) | KvError::TooLarge(what) => f.write_str(what),
            KvError::ReadOnly => f.write_str("this call may not write"),
            KvError::LeaseNotFound(lease) => write!(f, "lease {lease:x} not found"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<host::KvError> for KvError {
    fn from(error: host::KvError) -> KvError {
        match error {
            host::KvError::Denied(what) => KvError::Denied(what),
            host::KvError::ReadOnly => KvError::ReadOnly,
            host::KvError::LeaseNotFound(lease) => KvError::LeaseNotFound(lease),
            host::KvError::TooLarge(what) => KvError::TooLarge(what),
        }
    }
}

/// The key's current state, `None` when it does not exist.
pub fn get(key: &[u8]) -> Result<Option<KeyValue>, KvError> {
    Ok(host::get(key)?)
}

/// Writes `value` at `key`, detached from any lease.
pub fn put(key: &[u8], value: &[u8]) -> Result<(), KvError> {
    Ok(host::put(key, value, 0)?)
}

/// Writes `value` at `key`, attached to `lease` (0 for none).
pub fn put_with_lease(key: &[u8], value: &[u8], lease: i64) -> Result<(), KvError> {
    Ok(host::put(key, value, lease)?)
}

/// Deletes `key`; returns whether it existed.
pub fn delete(key: &[u8]) -> Result<bool, KvError> {
    Ok(host::delete_range(key, &[])? > 0)
}

/// Deletes the keys in `[start, end)` with etcd's conventions for `end` (see [`range`]);
/// returns how many there were.
pub fn delete_range(start: &[u8], end: &[u8]) -> Result<u32, KvError> {
    Ok(host::delete_range(start, end)?)
}

/// At most `limit` keys of `[start, end)` in key order (0 means the server's maximum). As in
/// etcd, an empty `end` means the single key `start` and `end` = `[0]` every key from `start` on.
pub fn range(start: &[u8], end: &[u8], limit: u32) -> Result<RangeResult, KvError> {
    Ok(host::range(start, end, limit)?)
}

/// At most `limit` keys starting with `prefix`, in key order (0 means the server's maximum).
pub fn range_prefix(prefix: &[u8], limit: u32) -> Result<RangeResult, KvError> {
    Ok(host::range(prefix, &prefix_end(prefix), limit)?)
}

/// Every key starting with `prefix`, in key order, read a page at a time.
pub fn scan_prefix(prefix: &[u8]) -> Result<Vec<KeyValue>, KvError> {
    let end = prefix_end(prefix);
    let mut start = prefix.to_vec();
    let mut kvs = Vec::new();
    loop {
        let page = host::range(&start, &end, 0)?;
        let Some(last) = page.kvs.last() else {
            return Ok(kvs);
        };
        // The smallest key after `last`.
        start = [last.key.as_slice(), &[0]].concat();
        kvs.extend(page.kvs);
        if !page.more {
            return Ok(kvs);
        }
    }
}

/// Deletes every key starting with `prefix`; returns how many there were.
pub fn delete_prefix(prefix: &[u8]) -> Result<u32, KvError> {
    Ok(host::delete_range(prefix, &prefix_end(prefix))?)
}

/// The smallest key above every key starting with `prefix`, as etcd's clients compute it: the
/// prefix with its last byte below 0xff incremented and the rest dropped, or `[0]` (to the end
/// of the keyspace) when there is no such byte.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&byte| byte < 0xff) {
        Some(last) => {
            let mut end = prefix[..=last].to_vec();
            end[last] += 1;
            end
        }
        None => vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }
}
