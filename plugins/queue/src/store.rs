//! One queue in the store: its records, bodies, indexes and counts, changed together so that
//! every message has exactly one index key.

use cairn_plugin_sdk::{KeyValue, kv};

use crate::keys::{Index, Keys};
use crate::message::{Counts, Place, Record};

/// A message still in the delayed or claimed index although its time has passed.
pub struct Due {
    /// Its key in the delayed or claimed index.
    pub key: Vec<u8>,
    pub from: Index,
    /// The key it moves to, which is that key's value.
    pub to_key: Vec<u8>,
    pub to: Index,
}

/// A queue, seen through the call's transaction. Changes are written as they are made, except
/// the counts, which [`Queue::save`] writes once at the end.
pub struct Queue {
    keys: Keys,
    counts: Counts,
    saved_counts: Counts,
}

impl Queue {
    pub fn open(name: &str) -> Result<Queue, String> {
        let keys = Keys::new(name)?;
        let counts = match kv::get(keys.counts().as_bytes()).map_err(|e| e.to_string())? {
            Some(stored) => serde_json::from_slice(&stored.value)
                .map_err(|e| format!("queue {name:?} has bad counts: {e}"))?,
            None => Counts::default(),
        };
        Ok(Queue {
            keys,
            counts,
            saved_counts: counts,
        })
    }

    /// How many keys each index holds: what became due but was not moved yet counts where it
    /// still is.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn record(&self, id: &str) -> Result<Option<Record>, String> {
        let Some(stored) = kv::get(self.keys.record(id).as_bytes()).map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&stored.value)
            .map(Some)
            .map_err(|e| format!("message {id} has a bad record: {e}"))
    }

    /// The record of a message an index names, which must exist.
    pub fn indexed_record(&self, id: &str) -> Result<Record, String> {
        self.record(id)?
            .ok_or_else(|| format!("message {id} is indexed but has no record"))
    }

    pub fn body(&self, id: &str) -> Result<String, String> {
        let stored = kv::get(self.keys.body(id).as_bytes())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("message {id} has no body"))?;
        String::from_utf8(stored.value).map_err(|_| format!("message {id} has a body not in UTF-8"))
    }

    pub fn insert(&mut self, id: &str, record: &Record, body: &str) -> Result<(), String> {
        put(self.keys.body(id).as_bytes(), body.as_bytes())?;
        self.put_record(id, record)
    }

    /// Replaces message `id`'s record `before` with `after`, moving its index key along.
    pub fn update(&mut self, id: &str, before: &Record, after: &Record) -> Result<(), String> {
        self.take_index_key(id, before)?;
        self.put_record(id, after)
    }

    pub fn remove(&mut self, id: &str, record: &Record) -> Result<(), String> {
        self.take_index_key(id, record)?;
        delete(self.keys.record(id).as_bytes())?;
        delete(self.keys.body(id).as_bytes())?;
        Ok(())
    }

    /// Moves a due message to where its time passing sends it. Its record, which still names
    /// the place it was put in, is left alone: that is what makes a move cheap.
    pub fn move_due(&mut self, due: &Due) -> Result<(), String> {
        delete(&due.key)?;
        put(&due.to_key, b"")?;
        self.counts.moved(due.from, due.to);
        Ok(())
    }

    /// The first `max` keys of `index`, in its order.
    pub fn first_index_keys(&self, index: Index, max: usize) -> Result<Vec<Vec<u8>>, String> {
        let prefix = self.keys.index_prefix(index);
        let entries = range(prefix.as_bytes(), &kv::prefix_end(prefix.as_bytes()), max)?;
        Ok(entries.into_iter().map(|entry| entry.key).collect())
    }

    /// The messages still delayed or claimed although due at `now_ms`, earliest first, at most
    /// `per_index` from each of the two indexes. Only these keys are read, however many
    /// messages wait behind them.
    pub fn due(&self, now_ms: u64, per_index: usize) -> Result<Vec<Due>, String> {
        let mut due = Vec::new();
        for from in [Index::Delayed, Index::Claimed] {
            let start = self.keys.index_prefix(from);
            let end = self.keys.due_end(from, now_ms);
            for entry in range(start.as_bytes(), &end, per_index)? {
                due.push(Due {
                    to: self.keys.index_of(&entry.value)?,
                    key: entry.key,
                    from,
                    to_key: entry.value,
                });
            }
        }
        Ok(due)
    }

    /// Writes the counts if they changed; a queue left empty keeps no keys at all.
    pub fn save(self) -> Result<(), String> {
        if self.counts == self.saved_counts {
            return Ok(());
        }
        let key = self.keys.counts();
        if self.counts == Counts::default() {
            delete(key.as_bytes())
        } else {
            put(key.as_bytes(), &encode(&self.counts)?)
        }
    }

    /// Writes message `id`'s record and its key in the index its place names. A delayed or
    /// claimed message's index key holds the key it moves to once due, so that moving it reads
    /// nothing else.
    fn put_record(&mut self, id: &str, record: &Record) -> Result<(), String> {
        let index_key = self.keys.index_key(id, record.priority, record.place);
        let moves_to = match record.place {
            Place::Delayed { .. } | Place::Claimed { .. } => {
                self.keys
                    .index_key(id, record.priority, record.place_when_due())
            }
            Place::Ready | Place::Dead => String::new(),
        };
        put(index_key.as_bytes(), moves_to.as_bytes())?;
        put(self.keys.record(id).as_bytes(), &encode(record)?)?;
        self.counts.added(record.place.index());
        Ok(())
    }

    /// Deletes message `id`'s index key. The record names the place the message was put in;
    /// if that was delayed or claimed, a claim may have moved it on since.
    fn take_index_key(&mut self, id: &str, record: &Record) -> Result<(), String> {
        for place in [record.place, record.place_when_due()] {
            let key = self.keys.index_key(id, record.priority, place);
            if kv::delete(key.as_bytes()).map_err(|e| e.to_string())? {
                self.counts.removed(place.index());
                return Ok(());
            }
        }
        Err(format!("message {id} is in no index"))
    }
}

/// The entries of `[start, end)` in key order, at most `max` of them, read a page at a time.
fn range(start: &[u8], end: &[u8], max: usize) -> Result<Vec<KeyValue>, String> {
    let mut entries = Vec::new();
    let mut from = start.to_vec();
    while entries.len() < max {
        // Over the server's page size, the server returns a page and says there is `more`.
        let limit = u32::try_from(max - entries.len()).unwrap_or(u32::MAX);
        let page = kv::range(&from, end, limit).map_err(|e| e.to_string())?;
        let Some(last) = page.kvs.last() else {
            break;
        };
        // The smallest key after `last`.
        from = [last.key.as_slice(), &[0]].concat();
        entries.extend(page.kvs);
        if !page.more {
            break;
        }
    }
    Ok(entries)
}

fn encode(value: &impl serde::Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

fn put(key: &[u8], value: &[u8]) -> Result<(), String> {
    kv::put(key, value).map_err(|e| e.to_string())
}

fn delete(key: &[u8]) -> Result<(), String> {
    kv::delete(key).map(|_| ()).map_err(|e| e.to_string())
}
