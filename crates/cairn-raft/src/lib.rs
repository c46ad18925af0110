//! Cairn's consensus layer: openraft over the kernel.
//!
//! It exists so that every replica applies the same commands in the same order: writes become
//! entries of a Raft log kept in RocksDB, and once an entry is committed every member applies it
//! to its kernel. The crate owns the log store, the state-machine adapter (with snapshots), the
//! peer network over tonic, and [`Replica`], the one handle the server uses to write, to read
//! linearizably and to change membership.
//!
//! openraft is pinned to 0.9.25: 0.9 is its stable line with a frozen API, while 0.10 has been in
//! alpha for over thirty releases, each free to change the storage and network traits this crate
//! implements.

mod answer_slot;
mod applied;
mod cluster_file;
mod codec;
mod fault;
mod log_store;
mod log_tail;
mod network;
mod peer_calls;
mod peer_identity;
mod peer_service;
mod peer_stream;
mod proposer;
mod replica;
mod state_machine;
mod synced;
mod types;

pub use cluster_file::{
    ClusterFileError, holds_log, restored_from, store_cluster_id, stored_cluster_id,
};
pub use fault::ApplyFault;
pub use network::{CallError, ClusterView, identify};
pub use peer_identity::{ClusterId, PeerIdentity, Sender};
pub use peer_service::PeerService;
pub use proposer::Outcome;
pub use replica::{
    Bootstrap, MemberStatus, RaftSettings, RaftStatus, Replica, ReplicaError, StartError,
};
pub use state_machine::{Backup, RestoreError, holds_member, restore_backup};
pub use types::{Applied, AppliedEvents, Member, MemberId};

/// openraft's own conformance suite for storage, run against the RocksDB log store and the
/// kernel-backed state machine: vote, log, purge, truncation, membership and snapshot rules as
/// openraft relies on them.
#[cfg(test)]
mod storage_conformance {
    use std::sync::Arc;

    use cairn_kernel::Limits;
    use openraft::testing::{StoreBuilder, Suite};
    use tokio::sync::RwLock;

    use crate::log_store::LogStore;
    use crate::state_machine::{StateDirs, StateMachine, open_kernel};
    use crate::synced::SyncedLog;
    use crate::types::{StorageError, TypeConfig};

    struct FreshStore;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FreshStore {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("creating a temporary directory");
            let dirs = StateDirs::new(dir.path());
            let (kernel, name) = open_kernel(&dirs, Limits::default()).expect("opening the kernel");
            let kernel = Arc::new(RwLock::new(kernel));
            let log = LogStore::open(&dirs.log, 1).expect("opening the log");
            let (events, _) = tokio::sync::broadcast::channel(16);
            // The suite applies entries it never appended to the log.
            let state_machine = StateMachine::new(
                kernel,
                name,
                dirs,
                Limits::default(),
                events,
                SyncedLog::everything(),
                crate::applied::applied_log(0).0,
            );
            Ok((dir, log, state_machine))
        }
    }

    #[test]
    fn log_store_and_state_machine_pass_openraft_suite() {
        Suite::test_all(FreshStore).unwrap();
    }
}
