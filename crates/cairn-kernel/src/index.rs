//! The in-memory index from each key to the revisions at which it changed.
//!
//! Values stay on disk; the index answers "which change of which key is visible at revision R"
//! for ranges, compares and deletes without touching storage. It is rebuilt from history at open,
//! as etcd rebuilds its tree index.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::storage::ChangeId;
use crate::types::{KeyRange, Revision};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    id: ChangeId,
    deleted: bool,
}

/// The changes of one key, oldest first.
#[derive(Debug, Default)]
struct KeyHistory {
    marks: Vec<Mark>,
}

impl KeyHistory {
    /// The put that is visible at `revision`, if the key exists then.
    fn visible_at(&self, revision: Revision) -> Option<ChangeId> {
        let after = self.marks.partition_point(|mark| mark.id.main <= revision);
        let mark = self.marks[..after].last()?;
        (!mark.deleted).then_some(mark.id)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    keys: BTreeMap<Vec<u8>, KeyHistory>,
}

impl Index {
    /// Records a change; changes arrive in revision order.
    pub fn record(&mut self, key: &[u8], id: ChangeId, deleted: bool) {
        let history = match self.keys.get_mut(key) {
            Some(history) => history,
            None => self.keys.entry(key.to_vec()).or_default(),
        };
        if let Some(last) = history.marks.last() {
            assert!(
                last.id < id,
                "changes of {key:?} out of order: {:?} then {id:?}",
                last.id
            );
        }
        history.marks.push(Mark { id, deleted });
    }

    /// The keys in `range` that exist at `revision`, in key order, with the change that made each
    /// one what it is then. Lazy: a reader that stops early walks no further.
    pub fn visible<'a>(
        &'a self,
        range: &'a KeyRange,
        revision: Revision,
    ) -> impl Iterator<Item = (&'a [u8], ChangeId)> + 'a {
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match range {
            KeyRange::Key(key) => (Bound::Included(key), Bound::Included(key)),
            KeyRange::Interval { start, end } if start < end => (
                Bound::Included(start.as_slice()),
                Bound::Excluded(end.as_slice()),
            ),
            // Empty, in bounds a B-tree accepts.
            KeyRange::Interval { start, .. } => (
                Bound::Included(start.as_slice()),
                Bound::Excluded(start.as_slice()),
            ),
            KeyRange::From(start) => (Bound::Included(start.as_slice()), Bound::Unbounded),
        };
        self.keys
            .range::<[u8], _>(bounds)
            .filter_map(move |(key, history)| Some((key.as_slice(), history.visible_at(revision)?)))
    }

    /// The change that makes `key` what it is at `revision`, if it exists then: what
    /// [`Index::visible`] says of one key, without building a range.
    pub fn visible_key(&self, key: &[u8], revision: Revision) -> Option<ChangeId> {
        self.keys.get(key)?.visible_at(revision)
    }

    /// Forgets every change that no read at `revision` or later can see, and returns them so
    /// storage can drop them too: all but the newest change at or before `revision`, and that one
    /// as well when it is a delete.
    pub fn compact(&mut self, revision: Revision) -> Vec<ChangeId> {
        let mut dropped = Vec::new();
        self.keys.retain(|_, history| {
            let at_or_before = history
                .marks
                .partition_point(|mark| mark.id.main <= revision);
            let mut keep_from = at_or_before.saturating_sub(1);
            if at_or_before > 0 && history.marks[keep_from].deleted {
                keep_from = at_or_before;
            }
            dropped.extend(history.marks.drain(..keep_from).map(|mark| mark.id));
            !history.marks.is_empty()
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(main: Revision) -> ChangeId {
        ChangeId { main, sub: 0 }
    }

    fn keys_at(index: &Index, range: &KeyRange, revision: Revision) -> Vec<(String, Revision)> {
        index
            .visible(range, revision)
            .map(|(key, id)| (String::from_utf8(key.to_vec()).unwrap(), id.main))
            .collect()
    }

    #[test]
    fn visibility_follows_puts_and_deletes_through_time() {
        let mut index = Index::default();
        index.record(b"a", id(2), false);
        index.record(b"b", id(3), false);
        index.record(b"a", id(4), true);
        index.record(b"a", id(5), false);
        let all = KeyRange::From(b"a".to_vec());
        assert_eq!(keys_at(&index, &all, 1), vec![]);
        assert_eq!(
            keys_at(&index, &all, 3),
            vec![("a".into(), 2), ("b".into(), 3)]
        );
        assert_eq!(keys_at(&index, &all, 4), vec![("b".into(), 3)]);
        assert_eq!(
            keys_at(&index, &all, 5),
            vec![("a".into(), 5), ("b".into(), 3)]
        );
        let backwards = KeyRange::Interval {
            start: b"b".to_vec(),
            end: b"a".to_vec(),
        };
        assert_eq!(keys_at(&index, &backwards, 5), vec![]);
    }

    #[test]
    fn one_key_is_seen_as_a_range_over_it_sees_it() {
        let mut index = Index::default();
        index.record(b"a", id(2), false);
        index.record(b"ab", id(3), false);
        index.record(b"a", id(4), true);
        index.record(b"a", id(5), false);
        for revision in 1..=6 {
            let one = KeyRange::Key(b"a".to_vec());
            let over_it = KeyRange::Interval {
                start: b"a".to_vec(),
                end: b"a\0".to_vec(),
            };
            let expected = keys_at(&index, &over_it, revision);
            assert_eq!(keys_at(&index, &one, revision), expected, "at {revision}");
            assert_eq!(
                index.visible_key(b"a", revision).map(|id| id.main),
                expected.first().map(|(_, main)| *main),
                "at {revision}"
            );
        }
        assert_eq!(index.visible_key(b"a", 3), Some(id(2)));
        assert_eq!(index.visible_key(b"a", 4), None, "deleted at 4");
        assert_eq!(index.visible_key(b"zz", 5), None, "never written");
    }

    #[test]
    fn compaction_keeps_exactly_what_later_reads_need() {
        let mut index = Index::default();
        index.record(b"a", id(2), false);
        index.record(b"a", id(3), false);
        index.record(b"b", id(4), false);
        index.record(b"b", id(5), true);
        index.record(b"a", id(6), false);
        let mut dropped = index.compact(5);
        dropped.sort();
        assert_eq!(dropped, vec![id(2), id(4), id(5)]);
        let all = KeyRange::From(b"\0".to_vec());
        assert_eq!(keys_at(&index, &all, 5), vec![("a".into(), 3)]);
        assert_eq!(keys_at(&index, &all, 6), vec![("a".into(), 6)]);
        assert!(index.compact(5).is_empty());
    }
}
