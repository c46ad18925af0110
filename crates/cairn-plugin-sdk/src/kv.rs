//! The store, seen through the call's transaction: reads see the call's own earlier writes, and
//! the writes commit together when the call succeeds, or not at all.
//!
//! Every key touched must lie inside a prefix the plugin's manifest grants; the host refuses the
//! rest with [`KvError::Denied`].

use crate::bindings::cairn::plugin::kv as host;
use crate::{KeyValue, KvError, RangeResult};

/// The key's current state, `None` when it does not exist.
pub fn get(key: &[u8]) -> Result<Option<KeyValue>, KvError> {
    host::get(key)
}

/// Writes `value` at `key`, detached from any lease.
pub fn put(key: &[u8], value: &[u8]) -> Result<(), KvError> {
    host::put(key, value, 0)
}

/// Writes `value` at `key`, attached to `lease` (0 for none).
pub fn put_with_lease(key: &[u8], value: &[u8], lease: i64) -> Result<(), KvError> {
    host::put(key, value, lease)
}

/// Deletes `key`; returns whether it existed.
pub fn delete(key: &[u8]) -> Result<bool, KvError> {
    Ok(host::delete_range(key, &[])? > 0)
}

/// Deletes the keys in `[start, end)` with etcd's conventions for `end` (see [`range`]);
/// returns how many there were.
pub fn delete_range(start: &[u8], end: &[u8]) -> Result<u32, KvError> {
    host::delete_range(start, end)
}

/// At most `limit` keys of `[start, end)` in key order (0 means the server's maximum). As in
/// etcd, an empty `end` means the single key `start` and `end` = `[0]` every key from `start` on.
pub fn range(start: &[u8], end: &[u8], limit: u32) -> Result<RangeResult, KvError> {
    host::range(start, end, limit)
}

/// At most `limit` keys starting with `prefix`, in key order (0 means the server's maximum).
pub fn range_prefix(prefix: &[u8], limit: u32) -> Result<RangeResult, KvError> {
    host::range(prefix, &prefix_end(prefix), limit)
}

/// Deletes every key starting with `prefix`; returns how many there were.
pub fn delete_prefix(prefix: &[u8]) -> Result<u32, KvError> {
    host::delete_range(prefix, &prefix_end(prefix))
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
