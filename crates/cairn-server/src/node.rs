//! What every service of a member shares: its replica of the cluster and who it is.

use std::sync::Arc;

use cairn_kernel::{Command, CommandResponse, KvError, Limits, Revision};
use cairn_proto::etcdserverpb::ResponseHeader;
use cairn_raft::{Replica, ReplicaError};
use tonic::Status;

use crate::status::{kv_status, replica_status, request_too_large};

/// The etcd API version this node speaks, reported by Maintenance.Status.
pub const ETCD_API_VERSION: &str = "3.4.0";

pub struct Node {
    pub replica: Replica,
    pub cluster_id: u64,
    pub request_bytes_max: usize,
    pub limits: Limits,
}

impl Node {
    pub fn header(&self, revision: Revision) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.replica.id,
            revision,
            raft_term: self.replica.term(),
        })
    }

    /// [`Node::header`] for Cairn's own services.
    pub fn cairn_header(
        &self,
        revision: Revision,
    ) -> Option<cairn_proto::cairn_v1::ResponseHeader> {
        self.header(revision)
            .map(|h| cairn_proto::cairn_v1::ResponseHeader {
                cluster_id: h.cluster_id,
                member_id: h.member_id,
                revision: h.revision,
                raft_term: h.raft_term,
            })
    }

    /// Whether this member leads, as far as it knows.
    pub fn leads(&self) -> bool {
        self.replica.status().leader == Some(self.replica.id)
    }

    /// Fills in the member fields of a header that carries only a revision.
    pub fn complete(&self, header: Option<ResponseHeader>) -> Option<ResponseHeader> {
        self.header(header.map_or(0, |h| h.revision))
    }

    /// Waits until a read of the local kernel is linearizable, unless the client asked for a
    /// serializable read, which is served from whatever this member has applied, unless its
    /// state machine has failed: the kernel's memory may then be ahead of what it applied.
    pub async fn prepare_read(&self, serializable: bool) -> Result<(), Status> {
        if serializable {
            if self.replica.kernel_failed() {
                return Err(replica_status(&ReplicaError::Stopped));
            }
            return Ok(());
        }
        self.replica
            .read_barrier()
            .await
            .map_err(|error| replica_status(&error))
    }

    /// Checks a write's size and shape, then applies it through the log. Refusing here keeps a
    /// bad write out of the log; apply would refuse it the same way.
    pub async fn write(
        &self,
        encoded_len: usize,
        command: Command,
    ) -> Result<CommandResponse, Status> {
        if encoded_len > self.request_bytes_max {
            return Err(request_too_large());
        }
        self.propose(command).await
    }

    /// Checks a write's shape, then applies it through the log, whatever its size: for writes
    /// with limits of their own, such as a plugin's component.
    pub async fn propose(&self, command: Command) -> Result<CommandResponse, Status> {
        self.submit(command)
            .await?
            .map_err(|error| kv_status(&error))
    }

    /// As [`Node::propose`], but hands back the kernel's refusal as it is, for callers that
    /// answer some refusals in their own way; the outer error is the cluster's failure.
    pub async fn submit(
        &self,
        command: Command,
    ) -> Result<Result<CommandResponse, KvError>, Status> {
        if let Err(error) = cairn_kernel::validate::command(&command, &self.limits) {
            return Ok(Err(error));
        }
        self.replica
            .write(command)
            .await
            .map_err(|error| replica_status(&error))
    }
}

pub type SharedNode = Arc<Node>;

/// Applying a command yields the response of its kind; anything else is a bug.
pub fn mismatched(response: &CommandResponse) -> ! {
    panic!("a command was answered with a response of another kind: {response:?}")
}
