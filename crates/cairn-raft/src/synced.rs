//! How far the Raft log is on disk, for the two places that must not run ahead of it: a leader
//! counting a follower's acknowledgement, and any member applying an entry.

use tokio::sync::watch;

use crate::types::LogId;

/// The id of the last entry the log's latest sync covered, as it advances.
#[derive(Clone)]
pub(crate) struct SyncedLog {
    synced: watch::Receiver<Option<LogId>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the Raft log closed before entry {0:?} was synced")]
pub(crate) struct LogClosed(pub Option<LogId>);

impl SyncedLog {
    pub(crate) fn new(synced: watch::Receiver<Option<LogId>>) -> SyncedLog {
        SyncedLog { synced }
    }

    /// The id the latest sync reported.
    pub(crate) fn current(&self) -> Option<LogId> {
        *self.synced.borrow()
    }

    /// Waits until a sync covers `log_id`: until the latest sync reported an id at least as
    /// high. Ids order by leader (term, then member), then index. The only entries reported
    /// written before a sync covers them are a leader's own, of the newest term it knows,
    /// appended in index order, so no sync made before such an entry was written can report an
    /// id as high; every other entry is synced before openraft may commit, apply or replicate
    /// it.
    pub(crate) async fn covering(&self, log_id: Option<LogId>) -> Result<(), LogClosed> {
        let mut synced = self.synced.clone();
        synced
            .wait_for(|synced| *synced >= log_id)
            .await
            .map(|_| ())
            .map_err(|_| LogClosed(log_id))
    }

    /// A log that counts as synced through every entry: for exercising the state machine on its
    /// own, with entries that were never appended to a log.
    #[cfg(test)]
    pub(crate) fn everything() -> SyncedLog {
        let last = LogId::new(
            openraft::CommittedLeaderId::new(u64::MAX, u64::MAX),
            u64::MAX,
        );
        SyncedLog::new(watch::channel(Some(last)).1)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::CommittedLeaderId;
    use tokio::sync::watch;

    use super::SyncedLog;
    use crate::types::LogId;

    fn id(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    #[tokio::test]
    async fn waiting_for_a_sync_ends_once_one_reaches_the_entry() {
        let (synced, receiver) = watch::channel(id(2, 5));
        let log = SyncedLog::new(receiver);
        log.covering(id(2, 5)).await.unwrap();
        log.covering(id(1, 9)).await.unwrap();
        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.covering(id(2, 7)).await }
        });
        synced.send_replace(id(2, 6));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a sync through 6 does not cover 7");
        synced.send_replace(id(3, 1));
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_closed_log_fails_the_wait_instead_of_hanging() {
        let (synced, receiver) = watch::channel(id(1, 1));
        let log = SyncedLog::new(receiver);
        drop(synced);
        assert!(log.covering(id(1, 2)).await.is_err());
        log.covering(id(1, 1)).await.unwrap();
    }
}
