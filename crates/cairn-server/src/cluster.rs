//! etcd's Cluster service: the member list and membership changes.

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_raft::MemberStatus;
use tonic::{Request, Response, Status};

use crate::config::listen_address;
use crate::identity;
use crate::node::SharedNode;
use crate::status::{invalid_argument, replica_status};

pub struct ClusterService {
    node: SharedNode,
    token: String,
}

impl ClusterService {
    /// `token` is the cluster token, from which the ID of an added member derives.
    pub fn new(node: SharedNode, token: String) -> ClusterService {
        ClusterService { node, token }
    }

    async fn header(&self) -> Option<pb::ResponseHeader> {
        let revision = self.node.replica.kernel().read().await.revision();
        self.node.header(revision)
    }
}

fn to_pb(status: &MemberStatus) -> pb::Member {
    pb::Member {
        id: status.id,
        name: status.member.name.clone(),
        peer_urls: status.member.peer_urls.clone(),
        client_urls: status.member.client_urls.clone(),
        is_learner: status.is_learner,
    }
}

fn to_pb_all(members: &[MemberStatus]) -> Vec<pb::Member> {
    members.iter().map(to_pb).collect()
}

/// etcd accepts only well-formed peer URLs, and at least one.
fn checked_peer_urls(urls: Vec<String>) -> Result<Vec<String>, Status> {
    if urls.is_empty() || urls.iter().any(|url| listen_address(url).is_err()) {
        return Err(invalid_argument(
            "etcdserver: given member URLs are invalid",
        ));
    }
    Ok(urls)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        let peer_urls = checked_peer_urls(request.peer_urls)?;
        let id = identity::member_id(&self.token, &peer_urls);
        let members = self
            .node
            .replica
            .add_member(id, peer_urls, request.is_learner)
            .await
            .map_err(|e| replica_status(&e))?;
        let added = members
            .iter()
            .find(|m| m.id == id)
            .map(to_pb)
            .ok_or_else(|| Status::internal("the added member is missing from the member list"))?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header().await,
            member: Some(added),
            members: to_pb_all(&members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let members = self
            .node
            .replica
            .remove_member(request.into_inner().id)
            .await
            .map_err(|e| replica_status(&e))?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header().await,
            members: to_pb_all(&members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let peer_urls = checked_peer_urls(request.peer_urls)?;
        let members = self
            .node
            .replica
            .update_member(request.id, peer_urls)
            .await
            .map_err(|e| replica_status(&e))?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header().await,
            members: to_pb_all(&members),
        }))
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: self.header().await,
            members: to_pb_all(&self.node.replica.members()),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let members = self
            .node
            .replica
            .promote_member(request.into_inner().id)
            .await
            .map_err(|e| replica_status(&e))?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header().await,
            members: to_pb_all(&members),
        }))
    }
}
