//! Where a queue keeps what (see the layout in the crate's documentation), and the encodings
//! that make key order the order messages are wanted in.

use crate::message::Place;

/// The prefix every queue's keys start with; the manifest grants exactly this one.
const ROOT: &str = "queues/";

/// Digits of `u64::MAX`: every number in a key is zero-padded to this width, so that key order
/// is numeric order.
const WIDTH: usize = 20;

/// The indexes a message can be in; each message is in exactly one, as its [`Place`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Index {
    Ready,
    Delayed,
    Claimed,
    Dead,
}

impl Index {
    fn name(self) -> &'static str {
        match self {
            Index::Ready => "ready",
            Index::Delayed => "delayed",
            Index::Claimed => "claimed",
            Index::Dead => "dead",
        }
    }
}

/// The keys of one queue.
pub struct Keys {
    /// `queues/<name>/`.
    prefix: String,
}

impl Keys {
    /// The keys of the queue called `name`, which must be non-empty and without `/`: a `/` would
    /// let one queue's keys fall inside another's (queue `a/ready` inside queue `a`).
    pub fn new(name: &str) -> Result<Keys, String> {
        if name.is_empty() {
            return Err("a queue needs a name".into());
        }
        if name.contains('/') {
            return Err(format!("queue name {name:?} may not contain '/'"));
        }
        Ok(Keys {
            prefix: format!("{ROOT}{name}/"),
        })
    }

    /// How many keys each index holds.
    pub fn counts(&self) -> String {
        format!("{}counts", self.prefix)
    }

    /// The message's record (see [`crate::message::Record`]).
    pub fn record(&self, id: &str) -> String {
        format!("{}message/{id}", self.prefix)
    }

    pub fn body(&self, id: &str) -> String {
        format!("{}body/{id}", self.prefix)
    }

    /// The key a message with `priority` has in the index `place` names. Ready messages sort by
    /// priority, highest first, then in push order; delayed and claimed ones by when they become
    /// due; dead ones in push order.
    pub fn index_key(&self, id: &str, priority: i64, place: Place) -> String {
        let index = self.index_prefix(place.index());
        match place {
            Place::Ready => format!("{index}{}/{id}", padded(rank(priority))),
            Place::Delayed { due_ms } => format!("{index}{}/{id}", padded(due_ms)),
            Place::Claimed { until_ms } => format!("{index}{}/{id}", padded(until_ms)),
            Place::Dead => format!("{index}{id}"),
        }
    }

    /// Which index `key` belongs to. Allocates nothing: `len` asks this of every message that
    /// became due.
    pub fn index_of(&self, key: &[u8]) -> Result<Index, String> {
        let within_queue = key.strip_prefix(self.prefix.as_bytes()).unwrap_or_default();
        [Index::Ready, Index::Delayed, Index::Claimed, Index::Dead]
            .into_iter()
            .find(|index| {
                within_queue
                    .strip_prefix(index.name().as_bytes())
                    .is_some_and(|rest| rest.starts_with(b"/"))
            })
            .ok_or_else(|| format!("{:?} is in no index", String::from_utf8_lossy(key)))
    }

    pub fn index_prefix(&self, index: Index) -> String {
        format!("{}{}/", self.prefix, index.name())
    }

    /// The end of the keys of the delayed or claimed `index` that are due at `now_ms`: those
    /// whose time is at most `now_ms` sort before it.
    pub fn due_end(&self, index: Index, now_ms: u64) -> Vec<u8> {
        let prefix = self.index_prefix(index);
        match now_ms.checked_add(1) {
            Some(after) => format!("{prefix}{}", padded(after)).into_bytes(),
            None => cairn_plugin_sdk::kv::prefix_end(prefix.as_bytes()),
        }
    }
}

/// The id of the message a push committing at `revision` stores: revisions only grow, so ids
/// are unique and sort in push order.
pub fn message_id(revision: i64) -> String {
    format!("{revision:0WIDTH$}")
}

/// The id an index key ends with.
pub fn id_in(index_key: &[u8]) -> Result<String, String> {
    let key = String::from_utf8_lossy(index_key);
    match key.rsplit_once('/') {
        Some((_, id)) if is_id(id) => Ok(id.to_string()),
        _ => Err(format!("index key {key:?} does not end with a message id")),
    }
}

/// The ids of the first `max` of `index_keys` (keys of one index) in key order, which is the
/// index's order.
pub fn first_ids(mut index_keys: Vec<Vec<u8>>, max: usize) -> Result<Vec<String>, String> {
    // A claim may weigh a few thousand keys to deliver a handful: selecting the first `max`
    // before sorting them costs a fraction of the fuel of sorting all.
    if max < index_keys.len() {
        index_keys.select_nth_unstable(max);
        index_keys.truncate(max);
    }
    index_keys.sort_unstable();
    index_keys.iter().map(|key| id_in(key)).collect()
}

/// Names one delivery of a message: its id and which attempt it is.
pub fn receipt(id: &str, attempt: u32) -> String {
    format!("{id}.{attempt}")
}

/// The id and attempt a [`receipt`] names, or `None` if it is not one.
pub fn parse_receipt(receipt: &str) -> Option<(String, u32)> {
    let (id, attempt) = receipt.split_once('.')?;
    if !is_id(id) || !attempt.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id.to_string(), attempt.parse().ok()?))
}

fn is_id(text: &str) -> bool {
    text.len() == WIDTH && text.bytes().all(|b| b.is_ascii_digit())
}

fn padded(number: u64) -> String {
    format!("{number:0WIDTH$}")
}

/// Maps priorities onto `u64` in reverse order, so that the highest sorts first: `i64::MAX`
/// ranks 0 and `i64::MIN` ranks `u64::MAX`.
fn rank(priority: i64) -> u64 {
    let above_min = (i128::from(priority) - i128::from(i64::MIN)) as u64;
    u64::MAX - above_min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_single_segments() {
        assert!(Keys::new("jobs").is_ok());
        assert!(Keys::new("").is_err());
        assert!(Keys::new("a/b").is_err());
        assert!(Keys::new("/").is_err());
    }

    #[test]
    fn rank_puts_higher_priorities_first() {
        let priorities = [i64::MAX, 1, 0, -1, i64::MIN];
        let ranks: Vec<String> = priorities.iter().map(|&p| padded(rank(p))).collect();
        assert!(ranks.is_sorted(), "{ranks:?}");
        assert_eq!(rank(i64::MAX), 0);
        assert_eq!(rank(i64::MIN), u64::MAX);
    }

    #[test]
    fn ready_keys_sort_by_priority_then_push_order() {
        let keys = Keys::new("q").unwrap();
        let key =
            |priority, revision| keys.index_key(&message_id(revision), priority, Place::Ready);
        let in_delivery_order = [key(7, 30), key(7, 31), key(0, 2), key(0, 100), key(-3, 1)];
        assert!(in_delivery_order.is_sorted(), "{in_delivery_order:?}");
        assert_eq!(
            key(0, 2),
            "queues/q/ready/09223372036854775807/00000000000000000002"
        );
    }

    #[test]
    fn time_keys_sort_numerically_and_end_at_now() {
        let keys = Keys::new("q").unwrap();
        let id = message_id(9);
        let delayed = |due_ms| keys.index_key(&id, 0, Place::Delayed { due_ms });
        assert!(delayed(999) < delayed(1000));
        let end = keys.due_end(Index::Delayed, 1000);
        assert!(delayed(1000).into_bytes() < end);
        assert!(delayed(1001).into_bytes() >= end);
        let claimed = keys.index_key(&id, 0, Place::Claimed { until_ms: 5 });
        assert!(claimed.into_bytes() < keys.due_end(Index::Claimed, 5));
        assert_eq!(
            keys.due_end(Index::Claimed, u64::MAX),
            b"queues/q/claimed0".to_vec()
        );
    }

    #[test]
    fn dead_keys_sort_in_push_order() {
        let keys = Keys::new("q").unwrap();
        let dead = |revision| keys.index_key(&message_id(revision), 9, Place::Dead);
        assert!(dead(9) < dead(10));
        assert_eq!(dead(9), "queues/q/dead/00000000000000000009");
    }

    #[test]
    fn ids_are_read_back_from_index_keys() {
        let keys = Keys::new("q").unwrap();
        let id = message_id(42);
        let key = keys.index_key(&id, -5, Place::Ready);
        assert_eq!(id_in(key.as_bytes()), Ok(id));
        assert_eq!(keys.index_of(key.as_bytes()), Ok(Index::Ready));
        let dead = keys.index_key(&message_id(42), -5, Place::Dead);
        assert_eq!(keys.index_of(dead.as_bytes()), Ok(Index::Dead));
        assert!(keys.index_of(b"queues/q/counts").is_err());
        assert!(keys.index_of(b"queues/q/readyish/1").is_err());
        assert!(keys.index_of(b"queues/other/dead/1").is_err());
        assert!(id_in(b"queues/q/ready/garbage").is_err());
    }

    #[test]
    fn first_ids_merges_index_keys_in_order() {
        let keys = Keys::new("q").unwrap();
        let ready = |priority, revision| {
            keys.index_key(&message_id(revision), priority, Place::Ready)
                .into_bytes()
        };
        let merged = vec![ready(0, 1), ready(0, 3), ready(5, 4), ready(0, 2)];
        let expected = [message_id(4), message_id(1), message_id(2)];
        assert_eq!(first_ids(merged.clone(), 3), Ok(expected.to_vec()));
        assert_eq!(first_ids(merged.clone(), 1), Ok(vec![message_id(4)]));
        assert_eq!(first_ids(merged, 10).unwrap().len(), 4);
        assert_eq!(first_ids(Vec::new(), 3), Ok(Vec::new()));
    }

    #[test]
    fn receipts_round_trip_and_refuse_anything_else() {
        let id = message_id(42);
        assert_eq!(parse_receipt(&receipt(&id, 3)), Some((id.clone(), 3)));
        assert_eq!(parse_receipt(&id), None);
        assert_eq!(parse_receipt(&format!("{id}.")), None);
        assert_eq!(parse_receipt(&format!("{id}.+3")), None);
        assert_eq!(parse_receipt(&format!("{id}.99999999999")), None);
        assert_eq!(parse_receipt("../counts.1"), None);
    }
}
