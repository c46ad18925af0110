//! gRPC status codes and messages for the kernel's errors, as etcd sends them.

use cairn_kernel::{Error, KvError};
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
        KvError::Compacted | KvError::FutureRevision => Code::OutOfRange,
    };
    Status::new(code, error.to_string())
}

pub fn kernel_status(error: &Error) -> Status {
    match error {
        Error::Kv(error) => kv_status(error),
        Error::Storage(error) => Status::internal(format!("storage failure: {error}")),
    }
}
