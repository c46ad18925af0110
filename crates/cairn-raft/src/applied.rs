//! How far this member's kernel has applied the log, for the requests that must see their own
//! effect in the local kernel before they answer: a write forwarded to the leader, and a
//! linearizable read.
//!
//! The state machine publishes each advance as soon as the kernel has applied it, while it still
//! holds the kernel's lock for the commit write that follows; a waiter reads the kernel only
//! through that lock, so it sees the commit done. openraft's metrics also carry the applied
//! index, but the core publishes them only after the state machine's report reaches it, one task
//! hop and a scheduling delay later (about 65 µs for a single write through a follower on three
//! members).

use std::time::Instant;

use tokio::sync::watch;

use crate::replica::ReplicaError;

/// Publishes the index of the last entry the kernel applied; the index only rises.
pub(crate) struct AppliedPublisher(watch::Sender<u64>);

/// The index of the last entry the kernel applied, as it advances.
#[derive(Clone)]
pub(crate) struct AppliedLog(watch::Receiver<u64>);

/// A publisher starting at `applied`, the kernel's record when it was opened, and its log.
pub(crate) fn applied_log(applied: u64) -> (AppliedPublisher, AppliedLog) {
    let (sender, receiver) = watch::channel(applied);
    (AppliedPublisher(sender), AppliedLog(receiver))
}

impl AppliedPublisher {
    /// Records that the kernel has applied through `index`. A snapshot installed over the
    /// kernel moves it forward too, never back.
    pub(crate) fn publish(&self, index: u64) {
        self.0.send_if_modified(|applied| {
            let higher = index > *applied;
            if higher {
                *applied = index;
            }
            higher
        });
    }
}

impl AppliedLog {
    /// The index the kernel has applied through.
    pub(crate) fn current(&self) -> u64 {
        *self.0.borrow()
    }

    /// Waits until the kernel has applied through `index`, or fails at `deadline`.
    pub(crate) async fn reaching(&self, index: u64, deadline: Instant) -> Result<(), ReplicaError> {
        let mut applied = self.0.clone();
        let reached = applied.wait_for(|applied| *applied >= index);
        match tokio::time::timeout_at(deadline.into(), reached).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ReplicaError::Stopped),
            Err(_) => Err(ReplicaError::Timeout(format!(
                "this member had not applied the log through index {index} in time"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::applied_log;
    use crate::replica::ReplicaError;

    #[tokio::test]
    async fn a_wait_ends_once_the_kernel_applies_that_far() {
        let (publisher, log) = applied_log(3);
        let far = Instant::now() + Duration::from_secs(5);
        log.reaching(2, far).await.unwrap();
        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.reaching(5, far).await }
        });
        publisher.publish(4);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "applied through 4 is not through 5");
        publisher.publish(6);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_wait_fails_at_its_deadline_or_when_the_kernel_goes() {
        let (publisher, log) = applied_log(1);
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            log.reaching(2, soon).await,
            Err(ReplicaError::Timeout(_))
        ));
        drop(publisher);
        let far = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            log.reaching(2, far).await,
            Err(ReplicaError::Stopped)
        ));
        log.reaching(1, far).await.unwrap();
    }
}
