//! What every service of a node shares: the kernel, the applier, and who this member is.

use std::sync::Arc;

use cairn_kernel::{Command, CommandResponse, Kernel, Limits, Revision};
use cairn_proto::etcdserverpb::ResponseHeader;
use tokio::sync::RwLock;
use tonic::Status;

use crate::applier::Applier;
use crate::identity::Identity;
use crate::status::{kv_status, request_too_large};

/// A single member leads from the start in term 1; replication (issue 3) brings real terms.
pub const RAFT_TERM: u64 = 1;

/// The etcd API version this node speaks, reported by Maintenance.Status.
pub const ETCD_API_VERSION: &str = "3.4.0";

pub struct Node {
    pub kernel: Arc<RwLock<Kernel>>,
    pub applier: Applier,
    pub identity: Identity,
    pub request_bytes_max: usize,
    pub limits: Limits,
}

impl Node {
    pub fn header(&self, revision: Revision) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision,
            raft_term: RAFT_TERM,
        })
    }

    /// Fills in the member fields of a header that carries only a revision.
    pub fn complete(&self, header: Option<ResponseHeader>) -> Option<ResponseHeader> {
        self.header(header.map_or(0, |h| h.revision))
    }

    /// Checks a write's size and shape, then applies it. Refusing here keeps a bad write out of
    /// the queue; apply would refuse it the same way.
    pub async fn write(
        &self,
        encoded_len: usize,
        command: Command,
    ) -> Result<CommandResponse, Status> {
        if encoded_len > self.request_bytes_max {
            return Err(request_too_large());
        }
        cairn_kernel::validate::command(&command, &self.limits)
            .map_err(|error| kv_status(&error))?;
        self.applier.submit(command).await
    }
}

pub type SharedNode = Arc<Node>;
