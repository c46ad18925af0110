//! Cairn's deterministic state machine: a multi-version key-value store over RocksDB with etcd
//! v3's semantics (revisions, history, compaction, ranges, transactions).
//!
//! It exists so that replication and plugins have one thing to agree on: applying the same
//! commands in the same order yields the same state, the same responses and the same history on
//! every replica. The kernel therefore knows nothing of Raft, gRPC or wasmtime; those layers sit
//! above it, feed it [`Command`]s and convert its plain [`types`] to and from their own.

mod error;
mod hash;
mod index;
mod kernel;
mod lease;
pub mod plugin;
mod plugin_apply;
mod plugin_txn;
mod range;
mod recent;
pub mod snapshot;
mod storage;
mod txn;
pub mod types;
pub mod validate;

pub use error::{Error, KvError, PluginFailureKind, StorageError};
pub use kernel::{History, Kernel};
pub use snapshot::{Checkpoint, SnapshotError};
pub use storage::Durability;
pub use types::*;
pub use validate::Limits;
