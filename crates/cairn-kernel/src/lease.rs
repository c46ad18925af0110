//! The in-memory lease table: each granted lease's TTL and the keys attached to it.
//!
//! TTLs are stored (the `lease` family); attachments are derived, since each key's newest put
//! names its lease. Both are rebuilt at open, as the key index is.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Lease, LeaseId, NO_LEASE};

#[derive(Debug, Default)]
struct Entry {
    ttl: i64,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Default)]
pub(crate) struct Leases {
    table: BTreeMap<LeaseId, Entry>,
}

impl Leases {
    pub fn contains(&self, id: LeaseId) -> bool {
        self.table.contains_key(&id)
    }

    pub fn grant(&mut self, id: LeaseId, ttl: i64) {
        assert_ne!(id, NO_LEASE, "lease 0 means no lease");
        let previous = self.table.insert(
            id,
            Entry {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        assert!(previous.is_none(), "lease {id} granted twice");
    }

    /// Forgets lease `id`, which must hold no keys any more.
    pub fn remove(&mut self, id: LeaseId) {
        let entry = self.table.remove(&id).expect("removed lease exists");
        assert!(
            entry.keys.is_empty(),
            "lease {id} removed while it holds keys"
        );
    }

    /// Records that `key` now belongs to `to` instead of `from` (either may be [`NO_LEASE`]).
    pub fn move_key(&mut self, key: &[u8], from: LeaseId, to: LeaseId) {
        if from == to {
            return;
        }
        if from != NO_LEASE {
            let removed = self
                .table
                .get_mut(&from)
                .is_some_and(|entry| entry.keys.remove(key));
            assert!(
                removed,
                "key {key:?} detached from lease {from} it was not on"
            );
        }
        if to != NO_LEASE {
            self.table
                .get_mut(&to)
                .unwrap_or_else(|| panic!("key {key:?} attached to unknown lease {to}"))
                .keys
                .insert(key.to_vec());
        }
    }

    pub fn ttl(&self, id: LeaseId) -> Option<i64> {
        self.table.get(&id).map(|entry| entry.ttl)
    }

    pub fn get(&self, id: LeaseId) -> Option<Lease> {
        self.table.get(&id).map(|entry| Lease {
            id,
            ttl: entry.ttl,
            keys: entry.keys.iter().cloned().collect(),
        })
    }

    /// Every lease with its TTL, in id order.
    pub fn ttls(&self) -> Vec<(LeaseId, i64)> {
        self.table
            .iter()
            .map(|(id, entry)| (*id, entry.ttl))
            .collect()
    }
}
