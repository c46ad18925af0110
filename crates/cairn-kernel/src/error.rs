//! Errors of the kernel: request errors, which are results, and storage errors, which are not.

use thiserror::Error;

/// Why a request was refused. Deterministic: every replica refuses the same command the same way,
/// and a refused command changes nothing. Messages are etcd's, word for word, because clients
/// match on them.
#[derive(Clone, Debug, Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KvError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("plugin {0:?} is not deployed")]
    PluginNotFound(String),
    /// A deploy or bind that cannot take effect; says why.
    #[error("{0}")]
    PluginRefused(String),
    /// A plugin call failed; nothing it wrote was kept.
    #[error("plugin {plugin:?} {function}: {reason}")]
    PluginFailed {
        plugin: String,
        function: String,
        kind: PluginFailureKind,
        reason: String,
    },
    /// A validator bound to the written keys rejected the request.
    #[error("rejected by validator {plugin:?}: {reason}")]
    Rejected { plugin: String, reason: String },
    #[error("this member runs no plugin runtime")]
    PluginsDisabled,
}

/// Which way a plugin call failed, for callers that answer differently to each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PluginFailureKind {
    /// The plugin returned an error.
    Returned,
    /// The plugin has no such function.
    NoSuchFunction,
    /// A limit stopped it: fuel, memory or output size.
    Limit,
    /// It trapped.
    Trap,
}

/// The storage engine failed. The kernel's state may no longer match its disk, so the node must
/// stop rather than answer.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("corrupt record in column family {family}: {reason}")]
    Corrupt {
        family: &'static str,
        reason: String,
    },
    /// The plugin runtime failed on this member where others may not: stopping is the only way
    /// to stay equal to them.
    #[error("plugin runtime: {0}")]
    PluginRuntime(String),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Either outcome of a kernel operation that can fail both ways.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
