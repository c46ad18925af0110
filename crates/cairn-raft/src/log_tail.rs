//! The newest entries of the Raft log, kept decoded in memory: replication reads what the leader
//! just appended once per follower, and serving it from here spares a RocksDB seek and a decode
//! each time. Entries share their commands ([`crate::types::Batch`]), so handing out a copy is
//! cheap.

use std::collections::VecDeque;
use std::ops::RangeBounds;

use crate::types::Entry;

/// Encoded bytes of entries kept; the oldest go first past this.
const KEPT_BYTES_MAX: usize = 64 << 20;

/// A contiguous run of entries that ends at the log's last entry, or nothing.
#[derive(Default)]
pub(crate) struct LogTail {
    /// Each entry with its encoded size, oldest first, indexes consecutive.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl LogTail {
    /// Adds entries just appended to the log, each with its encoded size. Entries that do not
    /// follow the last one kept replace what they overlap (the log was truncated first) or,
    /// after a gap, everything kept.
    pub(crate) fn append(&mut self, appended: impl IntoIterator<Item = (Entry, usize)>) {
        for (entry, size) in appended {
            let index = entry.log_id.index;
            match self.last_index() {
                Some(last) if index <= last => self.truncate(index),
                Some(last) if index > last + 1 => self.clear(),
                _ => {}
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.bytes > KEPT_BYTES_MAX && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    /// Drops entries from `index` on, as the log does.
    pub(crate) fn truncate(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            let (_, size) = self.entries.pop_back().expect("a last entry exists");
            self.bytes -= size;
        }
    }

    /// Drops entries up to and including `index`, as the log does.
    pub(crate) fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// The entries in `range`, if what the log holds there is all kept here: `range` starts at
    /// `start`, at or after the first entry kept. `None` means the log must be read instead.
    pub(crate) fn read(&self, start: u64, range: &impl RangeBounds<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        Some(
            self.entries
                .iter()
                .skip(skip)
                .map(|(entry, _)| entry)
                .take_while(|entry| range.contains(&entry.log_id.index))
                .cloned()
                .collect(),
        )
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(entry, _)| entry.log_id.index)
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::{KEPT_BYTES_MAX, LogTail};
    use crate::types::{Entry, LogId};

    fn entry(term: u64, index: u64) -> (Entry, usize) {
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        };
        (entry, 100)
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<(u64, u64)>> {
        entries.map(|entries| {
            entries
                .iter()
                .map(|entry| (entry.log_id.leader_id.term, entry.log_id.index))
                .collect()
        })
    }

    #[test]
    fn reads_only_what_it_holds_all_of() {
        let mut tail = LogTail::default();
        assert_eq!(indexes(tail.read(1, &(1..))), None);
        tail.append((5..=9).map(|index| entry(1, index)));
        assert_eq!(indexes(tail.read(4, &(4..8))), None, "entry 4 is not kept");
        assert_eq!(indexes(tail.read(6, &(6..8))), Some(vec![(1, 6), (1, 7)]));
        assert_eq!(indexes(tail.read(8, &(8..))), Some(vec![(1, 8), (1, 9)]));
        assert_eq!(indexes(tail.read(10, &(10..))), Some(vec![]));
    }

    #[test]
    fn follows_truncation_overwrites_and_purges_of_the_log() {
        let mut tail = LogTail::default();
        tail.append((1..=6).map(|index| entry(1, index)));
        tail.truncate(5);
        tail.append([entry(2, 5)]);
        assert_eq!(indexes(tail.read(4, &(4..))), Some(vec![(1, 4), (2, 5)]));
        // An append that overlaps without a truncation first replaces the overlap.
        tail.append([entry(3, 4)]);
        assert_eq!(indexes(tail.read(3, &(3..))), Some(vec![(1, 3), (3, 4)]));
        tail.purge(3);
        assert_eq!(indexes(tail.read(3, &(3..))), None);
        assert_eq!(indexes(tail.read(4, &(4..))), Some(vec![(3, 4)]));
        // After a gap (a snapshot installed past the log), nothing older is kept.
        tail.append([entry(3, 20)]);
        assert_eq!(indexes(tail.read(4, &(4..))), None);
        assert_eq!(indexes(tail.read(20, &(20..))), Some(vec![(3, 20)]));
    }

    #[test]
    fn lets_the_oldest_go_past_its_size_bound_but_keeps_the_newest() {
        let mut tail = LogTail::default();
        let (first, _) = entry(1, 1);
        let (second, _) = entry(1, 2);
        tail.append([(first, KEPT_BYTES_MAX), (second, KEPT_BYTES_MAX)]);
        assert_eq!(indexes(tail.read(1, &(1..))), None);
        assert_eq!(indexes(tail.read(2, &(2..))), Some(vec![(1, 2)]));
    }
}
