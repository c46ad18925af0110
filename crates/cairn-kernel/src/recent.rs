//! The key-values of the newest committed puts, kept in memory up to a size bound.
//!
//! Every put reads the key's previous state (for its create revision, version and lease, and for
//! the previous value watchers may ask for), and a range reads each key it returns. Served from
//! RocksDB, each is a memtable or table lookup; on three members under 256 writers those
//! lookups took about a tenth of the leader's CPU, all of it on the one task that applies the
//! log. Keys written lately are the ones read back soonest, so the newest puts are kept here.
//!
//! What is kept is a copy of what storage holds: committed changes only, forgotten when
//! compaction drops them, so a lookup here answers exactly what storage would.

use std::collections::BTreeMap;

use crate::storage::ChangeId;
use crate::types::KeyValue;

/// Bytes of key-values kept; the oldest go first past this.
const KEPT_BYTES_MAX: usize = 32 << 20;

/// Per kept put, besides its key and value: the record and the map's share.
const OVERHEAD_BYTES: usize = 96;

#[derive(Default)]
pub(crate) struct RecentPuts {
    kept: BTreeMap<ChangeId, KeyValue>,
    bytes: usize,
}

fn size(kv: &KeyValue) -> usize {
    kv.key.len() + kv.value.len() + OVERHEAD_BYTES
}

impl RecentPuts {
    pub(crate) fn get(&self, id: ChangeId) -> Option<&KeyValue> {
        self.kept.get(&id)
    }

    /// Keeps a put just committed; its id is newer than any kept.
    pub(crate) fn insert(&mut self, id: ChangeId, kv: KeyValue) {
        debug_assert!(
            self.kept
                .last_key_value()
                .is_none_or(|(last, _)| *last < id),
            "puts are committed in revision order"
        );
        self.bytes += size(&kv);
        self.kept.insert(id, kv);
        while self.bytes > KEPT_BYTES_MAX {
            let Some((_, oldest)) = self.kept.pop_first() else {
                break;
            };
            self.bytes -= size(&oldest);
        }
    }

    /// Forgets a change that compaction dropped from storage.
    pub(crate) fn remove(&mut self, id: ChangeId) {
        if let Some(kv) = self.kept.remove(&id) {
            self.bytes -= size(&kv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{KEPT_BYTES_MAX, OVERHEAD_BYTES, RecentPuts};
    use crate::storage::ChangeId;
    use crate::types::KeyValue;

    fn put(main: i64, value_len: usize) -> (ChangeId, KeyValue) {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 1,
            mod_revision: main,
            version: 1,
            value: vec![0; value_len],
            lease: 0,
        };
        (ChangeId { main, sub: 0 }, kv)
    }

    #[test]
    fn keeps_the_newest_puts_within_its_bound() {
        let mut recent = RecentPuts::default();
        let value_len = KEPT_BYTES_MAX / 4;
        for main in 1..=5 {
            let (id, kv) = put(main, value_len);
            recent.insert(id, kv);
        }
        let kept = |recent: &RecentPuts, main| recent.get(ChangeId { main, sub: 0 }).is_some();
        // Four puts of a quarter each, plus their overhead, exceed the bound: three fit.
        assert_eq!(
            (1..=5).map(|main| kept(&recent, main)).collect::<Vec<_>>(),
            [false, false, true, true, true]
        );
        assert_eq!(recent.bytes, 3 * (1 + value_len + OVERHEAD_BYTES));
    }

    #[test]
    fn forgets_what_compaction_drops() {
        let mut recent = RecentPuts::default();
        let (id, kv) = put(7, 10);
        recent.insert(id, kv.clone());
        assert_eq!(recent.get(id), Some(&kv));
        recent.remove(id);
        assert_eq!(recent.get(id), None);
        assert_eq!(recent.bytes, 0);
        recent.remove(id);
    }
}
