//! gRPC status codes and messages for the kernel's errors, as etcd sends them.

use cairn_kernel::{Error, KvError, PluginFailureKind};
use cairn_raft::ReplicaError;
use tonic::{Code, Status};

pub fn invalid_argument(message: impl Into<String>) -> Status {
    Status::new(Code::InvalidArgument, message)
}

/// etcd's message for a write larger than `--max-request-bytes`.
pub fn request_too_large() -> Status {
    invalid_argument("etcdserver: request is too large")
}

pub fn kv_status(error: &KvError) -> Status {
    let code = match error {
        KvError::EmptyKey
        | KvError::KeyNotFound
        | KvError::ValueProvided
        | KvError::LeaseProvided
        | KvError::TooManyOps
        | KvError::DuplicateKey => Code::InvalidArgument,
        KvError::LeaseNotFound => Code::NotFound,
        KvError::LeaseExists => Code::FailedPrecondition,
        KvError::LeaseTtlTooLarge => Code::OutOfRange,
        KvError::Compacted | KvError::FutureRevision => Code::OutOfRange,
        KvError::PluginNotFound(_) => Code::NotFound,
        KvError::PluginRefused(_) => Code::InvalidArgument,
        KvError::PluginFailed { kind, .. } => match kind {
            PluginFailureKind::Returned | PluginFailureKind::Trap => Code::Aborted,
            PluginFailureKind::NoSuchFunction => Code::Unimplemented,
            PluginFailureKind::Limit => Code::ResourceExhausted,
        },
        KvError::Rejected { .. } => Code::FailedPrecondition,
        KvError::PluginsDisabled => Code::Unavailable,
    };
    Status::new(code, error.to_string())
}

pub fn kernel_status(error: &Error) -> Status {
    match error {
        Error::Kv(error) => kv_status(error),
        Error::Storage(error) => Status::internal(format!("storage failure: {error}")),
    }
}

/// etcd's code and message for each way the cluster can fail a request.
pub fn replica_status(error: &ReplicaError) -> Status {
    let (code, message) = match error {
        ReplicaError::NoLeader => (Code::Unavailable, "etcdserver: no leader".to_string()),
        ReplicaError::Timeout(_) | ReplicaError::Unavailable(_) => (
            Code::Unavailable,
            "etcdserver: request timed out".to_string(),
        ),
        ReplicaError::Stopped => (Code::Unavailable, "etcdserver: server stopped".to_string()),
        ReplicaError::NotAccepted(reason) => (
            Code::Unavailable,
            format!("etcdserver: this member is not part of the cluster: {reason}"),
        ),
        ReplicaError::MemberNotFound(_) => {
            (Code::NotFound, "etcdserver: member not found".to_string())
        }
        ReplicaError::PeerUrlExists => (
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists".to_string(),
        ),
        ReplicaError::NotLearner(_) => (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member".to_string(),
        ),
        ReplicaError::LearnerNotReady(_) => (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader"
                .to_string(),
        ),
        ReplicaError::Unhealthy => (
            Code::Unavailable,
            "etcdserver: unhealthy cluster".to_string(),
        ),
        ReplicaError::NotLeader => (
            Code::FailedPrecondition,
            "etcdserver: not leader".to_string(),
        ),
        ReplicaError::BadTransferee(_) => (
            Code::FailedPrecondition,
            "etcdserver: bad leader transferee".to_string(),
        ),
        ReplicaError::TransferTimeout => (
            Code::Unavailable,
            "etcdserver: request timed out, leader transfer took too long".to_string(),
        ),
        ReplicaError::Refused(reason) => (
            Code::FailedPrecondition,
            format!("etcdserver: membership change refused: {reason}"),
        ),
        ReplicaError::PeerInOtherCluster { .. } | ReplicaError::PeerAlreadyMember { .. } => {
            (Code::FailedPrecondition, format!("etcdserver: {error}"))
        }
    };
    if !matches!(error, ReplicaError::NoLeader) {
        tracing::debug!(%error, "request failed in the cluster");
    }
    Status::new(code, message)
}
