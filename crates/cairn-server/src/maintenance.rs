//! etcd's Maintenance and Cluster services, as far as a single member answers them.

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use tonic::{Request, Response, Status};

use crate::node::{ETCD_API_VERSION, RAFT_TERM, SharedNode};

pub struct MaintenanceService {
    node: SharedNode,
}

impl MaintenanceService {
    pub fn new(node: SharedNode) -> MaintenanceService {
        MaintenanceService { node }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let kernel = self.node.kernel.read().await;
        let db_size = i64::try_from(kernel.size_bytes()).unwrap_or(i64::MAX);
        Ok(Response::new(pb::StatusResponse {
            header: self.node.header(kernel.revision()),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: self.node.identity.member_id,
            raft_index: kernel.applied_index(),
            raft_term: RAFT_TERM,
            raft_applied_index: kernel.applied_index(),
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
        }))
    }
}

pub struct ClusterService {
    node: SharedNode,
}

impl ClusterService {
    pub fn new(node: SharedNode) -> ClusterService {
        ClusterService { node }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let identity = &self.node.identity;
        let revision = self.node.kernel.read().await.revision();
        Ok(Response::new(pb::MemberListResponse {
            header: self.node.header(revision),
            members: vec![pb::Member {
                id: identity.member_id,
                name: identity.name.clone(),
                // A single member has no peer listener until replication (issue 3).
                peer_urls: Vec::new(),
                client_urls: identity.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }
}
