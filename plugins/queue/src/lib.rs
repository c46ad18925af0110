//! Cairn's bundled queue: durable queues with priorities, delays, at-least-once delivery and
//! dead letters.
//!
//! A consumer claims messages for a while (their visibility) and acks each once it has handled
//! it. A message neither acked nor nacked before its visibility passes is delivered again, to
//! whoever claims next; one that has had `max_attempts` deliveries goes to the queue's dead
//! letters instead. Time is the leader's clock stamped in the call's log entry, so every replica
//! agrees on what is due.
//!
//! Functions (JSON in, JSON out; unknown fields are refused; a queue name is non-empty and has
//! no `/`; bodies are UTF-8 text; `max` is 1 to 100):
//! - `push {"queue", "body", "priority"?: 0, "delay_ms"?: 0, "max_attempts"?: 5}` adds a
//!   message, deliverable once `delay_ms` has passed, and returns `{"id"}`. Ids are unique and
//!   sort in push order.
//! - `claim {"queue", "visibility_ms"?: 30000, "max"?: 1}` delivers up to `max` deliverable
//!   messages, highest priority first and in push order within a priority, and hides them from
//!   other claims for `visibility_ms`. Returns `{"now_ms", "messages": [{"id", "body",
//!   "priority", "attempts", "receipt", "invisible_until_ms"}]}`; `attempts` counts this
//!   delivery and `receipt` names it.
//! - `ack {"queue", "receipt"}` deletes the message if `receipt` names its current delivery:
//!   the latest, and not nacked. That holds after its visibility passed too, until a claim
//!   delivers the message again, and even once it counts as dead, the handling having been
//!   done after all. Returns `{"acked"}`, false for any other receipt (malformed ones too).
//! - `nack {"queue", "receipt", "delay_ms"?: 0}` gives the current delivery back: the message is
//!   deliverable again after `delay_ms`, or dead if it has had all its attempts. Returns
//!   `{"requeued", "dead"}`, both false for any other receipt.
//! - `len {"queue"}` returns `{"ready", "delayed", "claimed", "dead"}` as of now: a delay that
//!   passed counts as ready, and so does a claim whose visibility passed (as dead, if that was
//!   the message's last attempt).
//! - `peek {"queue", "max"?: 10}` returns `{"messages": [{"id", "body", "priority",
//!   "attempts"}]}`: what a claim would deliver next. Writes nothing, so it runs read-only.
//! - `dead {"queue", "max"?: 10}` returns the dead letters the same way, in push order.
//!   Read-only too.
//!
//! Layout: queue `Q` keeps everything under `queues/Q/`. An id is the revision its push
//! committed at, and every number in a key is zero-padded to 20 digits, so that key order is
//! numeric order.
//! - `message/ID`: the message's record (JSON): priority, max_attempts, attempts, whether its
//!   latest delivery is outstanding, and the place it was put in (ready, delayed, claimed or
//!   dead).
//! - `body/ID`: its body, kept apart so that moving a message never reads or rewrites it.
//! - One index key per message, in the index its place names:
//!   - `ready/RANK/ID` in delivery order, RANK being the priority mapped onto `u64` in reverse
//!     (`i64::MAX` ranks 0);
//!   - `delayed/DUE_MS/ID` and `claimed/UNTIL_MS/ID` in the order they become due, each
//!     holding the key the message moves to then: its ready key, or for a claim that was the
//!     message's last attempt, its dead key;
//!   - `dead/ID` in push order.
//! - `counts`: how many keys each index holds (absent when all are zero), so that `len` reads
//!   only what became due and was not moved yet.
//!
//! A delayed or claimed message stays in its index after its time passes until a claim moves
//! it: each claim first moves what became due (a delete and a put per message, its record left
//! alone), then delivers the first keys of the ready index. A waiting message thus never stands
//! in front of a deliverable one, and a push, claim, ack or nack touches only the messages it
//! moves or delivers, plus one bounded range read per index. An ack or a nack finds the
//! delivery's index key from the record: where the claim put it, or where a later claim moved
//! it. Peek, len and dead work out the same moves without making them. A claim moves at most
//! `DUE_MOVES_MAX` messages from each of the delayed and claimed indexes, earliest first, so
//! that a backlog of due messages cannot make every claim run out of fuel; past that, a message
//! that became due later waits for the next claim even if its priority is higher.

mod keys;
mod message;
mod protocol;
mod store;

use cairn_plugin_sdk::context;
use cairn_plugin_sdk::json::reply;

use keys::Index;
use message::{Place, Record};
use protocol::{Ack, Claim, Claimed, Delivery, Len, List, Listed, Listing, Nack, Push, parse};
use store::{Due, Queue};

/// Most messages one claim (or peek) moves out of each of the delayed and claimed indexes. A
/// claim that moves this many from both and delivers 100 small messages was measured to burn
/// about 15 of the manifest's 50 million units of fuel, which leaves room for large bodies.
const DUE_MOVES_MAX: usize = 1000;

fn push(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Push = parse(input)?;
    let mut queue = Queue::open(&request.queue)?;
    // The push writes, so it commits at the next revision, which no other call commits at.
    let id = keys::message_id(context::revision() + 1);
    let record = Record::pushed(
        request.priority,
        request.max_attempts,
        context::now_ms(),
        request.delay_ms,
    );
    queue.insert(&id, &record, &request.body)?;
    queue.save()?;
    reply(&serde_json::json!({ "id": id }))
}

fn claim(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Claim = parse(input)?;
    let now_ms = context::now_ms();
    let invisible_until_ms = now_ms.saturating_add(request.visibility_ms);
    let mut queue = Queue::open(&request.queue)?;
    let plan = plan_claim(&queue, now_ms, request.max)?;
    for due in &plan.due {
        queue.move_due(due)?;
    }
    let mut messages = Vec::with_capacity(plan.next.len());
    for id in plan.next {
        messages.push(deliver(&mut queue, id, invisible_until_ms)?);
    }
    queue.save()?;
    reply(&Claimed { now_ms, messages })
}

fn ack(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Ack = parse(input)?;
    let mut queue = Queue::open(&request.queue)?;
    let acked = match current_delivery(&queue, &request.receipt)? {
        Some((id, record)) => {
            queue.remove(&id, &record)?;
            true
        }
        None => false,
    };
    queue.save()?;
    reply(&serde_json::json!({ "acked": acked }))
}

fn nack(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Nack = parse(input)?;
    let mut queue = Queue::open(&request.queue)?;
    let (requeued, dead) = match current_delivery(&queue, &request.receipt)? {
        Some((id, before)) => {
            let after = before.nacked(context::now_ms(), request.delay_ms);
            queue.update(&id, &before, &after)?;
            let dead = after.place == Place::Dead;
            (!dead, dead)
        }
        None => (false, false),
    };
    queue.save()?;
    reply(&serde_json::json!({ "requeued": requeued, "dead": dead }))
}

fn len(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Len = parse(input)?;
    let queue = Queue::open(&request.queue)?;
    let mut counts = queue.counts();
    for due in queue.due(context::now_ms(), usize::MAX)? {
        counts.moved(due.from, due.to);
    }
    reply(&counts)
}

fn peek(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: List = parse(input)?;
    let queue = Queue::open(&request.queue)?;
    let plan = plan_claim(&queue, context::now_ms(), request.max)?;
    list(&queue, plan.next)
}

fn dead(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: List = parse(input)?;
    let queue = Queue::open(&request.queue)?;
    let due = queue.due(context::now_ms(), usize::MAX)?;
    list(&queue, first_in(&queue, Index::Dead, &due, request.max)?)
}

/// What a claim at `now_ms` does: move what became due, then deliver `next`.
struct Plan {
    due: Vec<Due>,
    next: Vec<String>,
}

/// Worked out before any write, so that peek, which may not write, sees what claim would do.
fn plan_claim(queue: &Queue, now_ms: u64, max: u32) -> Result<Plan, String> {
    let due = queue.due(now_ms, DUE_MOVES_MAX)?;
    let next = first_in(queue, Index::Ready, &due, max)?;
    Ok(Plan { due, next })
}

/// The ids of the first `max` messages of `index` once `due` have moved.
fn first_in(queue: &Queue, index: Index, due: &[Due], max: u32) -> Result<Vec<String>, String> {
    let max = max as usize;
    let mut index_keys = queue.first_index_keys(index, max)?;
    let moving_in = due
        .iter()
        .filter(|due| due.to == index)
        .map(|due| due.to_key.clone());
    index_keys.extend(moving_in);
    keys::first_ids(index_keys, max)
}

/// Claims ready message `id` until `invisible_until_ms`.
fn deliver(queue: &mut Queue, id: String, invisible_until_ms: u64) -> Result<Delivery, String> {
    let before = queue.indexed_record(&id)?;
    let after = before.claimed(invisible_until_ms);
    queue.update(&id, &before, &after)?;
    Ok(Delivery {
        body: queue.body(&id)?,
        priority: after.priority,
        attempts: after.attempts,
        receipt: keys::receipt(&id, after.attempts),
        invisible_until_ms,
        id,
    })
}

/// The message whose delivery `receipt` names, if that delivery is current.
fn current_delivery(queue: &Queue, receipt: &str) -> Result<Option<(String, Record)>, String> {
    let Some((id, attempt)) = keys::parse_receipt(receipt) else {
        return Ok(None);
    };
    let record = queue.record(&id)?;
    Ok(record
        .filter(|record| record.is_current_delivery(attempt))
        .map(|record| (id, record)))
}

fn list(queue: &Queue, ids: Vec<String>) -> Result<Vec<u8>, String> {
    let mut messages = Vec::with_capacity(ids.len());
    for id in ids {
        let record = queue.indexed_record(&id)?;
        messages.push(Listed {
            body: queue.body(&id)?,
            priority: record.priority,
            attempts: record.attempts,
            id,
        });
    }
    reply(&Listing { messages })
}

cairn_plugin_sdk::recipe! {
    "push" => push,
    "claim" => claim,
    "ack" => ack,
    "nack" => nack,
    "len" => len,
    "peek" => peek,
    "dead" => dead,
}
