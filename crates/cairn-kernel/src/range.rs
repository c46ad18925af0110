//! Range reads with etcd's options: revision, limit, filters, sorting, keys-only, count-only.

use std::cmp::Ordering;

use crate::error::{Error, KvError};
use crate::kernel::Kernel;
use crate::types::{KeyValue, RangeRequest, RangeResponse, Revision, SortOrder, SortTarget};

impl Kernel {
    /// Reads as of `current`, the newest revision the reader may see.
    pub(crate) fn range_at(
        &self,
        request: &RangeRequest,
        current: Revision,
    ) -> Result<RangeResponse, Error> {
        let revision = match request.revision {
            r if r > current => return Err(KvError::FutureRevision.into()),
            r if r <= 0 => current,
            r => r,
        };
        if revision < self.compact_revision() {
            return Err(KvError::Compacted.into());
        }
        // etcd reports how many keys the whole range holds, whatever the limit.
        let visible: Vec<_> = self.index().visible(&request.range, revision).collect();
        let mut response = RangeResponse {
            revision: current,
            kvs: Vec::new(),
            more: false,
            count: visible.len() as i64,
        };
        if request.count_only {
            return Ok(response);
        }
        let mut kvs = visible[..fetch_count(request, visible.len())]
            .iter()
            .map(|(_, id)| self.load(*id))
            .collect::<Result<Vec<_>, _>>()?;
        kvs.retain(|kv| passes_filters(request, kv));
        sort(request, &mut kvs);
        if request.limit > 0 && kvs.len() as i64 > request.limit {
            kvs.truncate(request.limit as usize);
            response.more = true;
        }
        if request.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value = Vec::new());
        }
        response.kvs = kvs;
        Ok(response)
    }
}

/// How many visible keys, in key order, must be loaded. As etcd does, a limited read without
/// sorting or filters loads one key past the limit to learn whether there are more, and anything
/// else loads every key. Note that a sort target other than KEY with order NONE still sorts
/// (ascending), but only what this loaded: etcd's behaviour, kept for compatibility.
fn fetch_count(request: &RangeRequest, visible: usize) -> usize {
    let loads_all = request.sort_order != SortOrder::None
        || request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    if loads_all || request.limit <= 0 {
        return visible;
    }
    visible.min(
        usize::try_from(request.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1),
    )
}

fn passes_filters(request: &RangeRequest, kv: &KeyValue) -> bool {
    let within = |value: Revision, min: Revision, max: Revision| {
        (min == 0 || value >= min) && (max == 0 || value <= max)
    };
    within(
        kv.mod_revision,
        request.min_mod_revision,
        request.max_mod_revision,
    ) && within(
        kv.create_revision,
        request.min_create_revision,
        request.max_create_revision,
    )
}

/// Stable, so keys that tie on the target stay in key order on every replica.
fn sort(request: &RangeRequest, kvs: &mut [KeyValue]) {
    let order = match (request.sort_order, request.sort_target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let by_target = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match request.sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| by_target(b, a)),
        _ => kvs.sort_by(by_target),
    }
}
