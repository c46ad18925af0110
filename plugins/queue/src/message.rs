//! A message's state and how each operation changes it, apart from the store.

use serde::{Deserialize, Serialize};

use crate::keys::Index;

/// Where a message was put, which names the index its key went into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// Deliverable.
    Ready,
    /// Pushed or nacked with a delay: deliverable from `due_ms`.
    Delayed { due_ms: u64 },
    /// Delivered, and invisible to other claims until `until_ms`.
    Claimed { until_ms: u64 },
    /// Out of attempts; never delivered again.
    Dead,
}

impl Place {
    pub fn index(self) -> Index {
        match self {
            Place::Ready => Index::Ready,
            Place::Delayed { .. } => Index::Delayed,
            Place::Claimed { .. } => Index::Claimed,
            Place::Dead => Index::Dead,
        }
    }
}

/// Everything about a message but its body, which is stored apart so that moving a message
/// between indexes never reads or rewrites it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub priority: i64,
    pub max_attempts: u32,
    /// Deliveries so far.
    pub attempts: u32,
    /// Whether the latest delivery may still be acked or nacked: a claim opens it and a nack
    /// closes it, but its visibility passing does not, so a late ack still counts as long as no
    /// claim has delivered the message again.
    pub outstanding: bool,
    /// Where the message was put. Once a delayed or claimed message's time has passed, a claim
    /// may have moved it on to [`Record::place_when_due`] without rewriting the record.
    pub place: Place,
}

impl Record {
    /// A message pushed at `now_ms`, deliverable after `delay_ms`.
    pub fn pushed(priority: i64, max_attempts: u32, now_ms: u64, delay_ms: u64) -> Record {
        Record {
            priority,
            max_attempts,
            attempts: 0,
            outstanding: false,
            place: waiting(now_ms, delay_ms),
        }
    }

    /// The message delivered once more, hidden from other claims until `until_ms`.
    pub fn claimed(&self, until_ms: u64) -> Record {
        Record {
            attempts: self.attempts + 1,
            outstanding: true,
            place: Place::Claimed { until_ms },
            ..self.clone()
        }
    }

    /// Where the message goes once its delay or its claim's visibility has passed: ready, or
    /// dead if it has had all its attempts (which only a claimed message can have had).
    pub fn place_when_due(&self) -> Place {
        if self.exhausted() {
            Place::Dead
        } else {
            Place::Ready
        }
    }

    /// The message given back at `now_ms`: deliverable again after `delay_ms`, or dead if it
    /// has had all its attempts.
    pub fn nacked(&self, now_ms: u64, delay_ms: u64) -> Record {
        Record {
            outstanding: false,
            place: match self.place_when_due() {
                Place::Ready => waiting(now_ms, delay_ms),
                dead => dead,
            },
            ..self.clone()
        }
    }

    /// Whether `attempt` is the message's latest delivery and still open to an ack or a nack.
    pub fn is_current_delivery(&self, attempt: u32) -> bool {
        self.outstanding && self.attempts == attempt
    }

    fn exhausted(&self) -> bool {
        self.attempts >= self.max_attempts
    }
}

/// Where a message that may be delivered after `delay_ms` goes at `now_ms`.
fn waiting(now_ms: u64, delay_ms: u64) -> Place {
    if delay_ms == 0 {
        Place::Ready
    } else {
        Place::Delayed {
            due_ms: now_ms.saturating_add(delay_ms),
        }
    }
}

/// How many messages each index holds; also `len`'s reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub ready: u64,
    pub delayed: u64,
    pub claimed: u64,
    pub dead: u64,
}

impl Counts {
    pub fn added(&mut self, index: Index) {
        *self.of(index) += 1;
    }

    pub fn removed(&mut self, index: Index) {
        // Saturating: counts drift only if someone edits the queue's keys by hand, and that
        // should not make every later call trap.
        let count = self.of(index);
        *count = count.saturating_sub(1);
    }

    pub fn moved(&mut self, from: Index, to: Index) {
        self.removed(from);
        self.added(to);
    }

    fn of(&mut self, index: Index) -> &mut u64 {
        match index {
            Index::Ready => &mut self.ready,
            Index::Delayed => &mut self.delayed,
            Index::Claimed => &mut self.claimed,
            Index::Dead => &mut self.dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_waits_for_its_delay() {
        assert_eq!(Record::pushed(0, 5, 1000, 0).place, Place::Ready);
        assert_eq!(
            Record::pushed(0, 5, 1000, 250).place,
            Place::Delayed { due_ms: 1250 }
        );
        assert_eq!(
            Record::pushed(0, 5, u64::MAX - 1, 10).place,
            Place::Delayed { due_ms: u64::MAX }
        );
    }

    #[test]
    fn a_claim_counts_the_attempt_and_opens_a_delivery() {
        let claimed = Record::pushed(3, 2, 0, 0).claimed(130);
        assert_eq!(claimed.attempts, 1);
        assert_eq!(claimed.place, Place::Claimed { until_ms: 130 });
        assert!(claimed.is_current_delivery(1));
        assert!(!claimed.is_current_delivery(0));
        assert!(!claimed.claimed(230).is_current_delivery(1));
    }

    #[test]
    fn an_expired_claim_is_ready_again_until_its_attempts_run_out() {
        let first = Record::pushed(0, 2, 0, 0).claimed(10);
        assert_eq!(first.place_when_due(), Place::Ready);
        assert!(first.is_current_delivery(1), "a late ack still counts");
        let last = first.claimed(30);
        assert_eq!(last.place_when_due(), Place::Dead);
        assert_eq!(Record::pushed(0, 1, 0, 5).place_when_due(), Place::Ready);
    }

    #[test]
    fn a_nack_closes_the_delivery_and_requeues_or_buries() {
        let first = Record::pushed(0, 2, 0, 0).claimed(10);
        let requeued = first.nacked(5, 0);
        assert_eq!(requeued.place, Place::Ready);
        assert!(!requeued.is_current_delivery(1));
        assert_eq!(first.nacked(5, 20).place, Place::Delayed { due_ms: 25 });
        assert_eq!(requeued.claimed(16).nacked(7, 20).place, Place::Dead);
    }

    #[test]
    fn counts_follow_moves() {
        let mut counts = Counts::default();
        counts.added(Index::Ready);
        counts.added(Index::Delayed);
        counts.moved(Index::Ready, Index::Claimed);
        counts.moved(Index::Claimed, Index::Dead);
        let expected = Counts {
            ready: 0,
            delayed: 1,
            claimed: 0,
            dead: 1,
        };
        assert_eq!(counts, expected);
        counts.removed(Index::Dead);
        counts.removed(Index::Delayed);
        counts.removed(Index::Delayed);
        assert_eq!(counts, Counts::default(), "counts saturate at zero");
    }
}
