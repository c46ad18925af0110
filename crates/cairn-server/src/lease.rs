//! etcd's Lease service. Grants and revocations go through the log; keep-alives and remaining
//! TTLs are the leader's business (see [`crate::lessor`]).

use std::pin::Pin;
use std::sync::Arc;

use cairn_kernel::{Command, CommandResponse, LeaseGrantRequest, LeaseRevokeRequest, NO_LEASE};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::lease_server::Lease;
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::lessor::Lessor;
use crate::node::{SharedNode, mismatched};

pub struct LeaseService {
    node: SharedNode,
    lessor: Arc<Lessor>,
}

impl LeaseService {
    pub fn new(node: SharedNode, lessor: Arc<Lessor>) -> LeaseService {
        LeaseService { node, lessor }
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let request = request.into_inner();
        let encoded_len = request.encoded_len();
        let grant = LeaseGrantRequest {
            id: match request.id {
                NO_LEASE => self.lessor.new_id(),
                id => id,
            },
            ttl: request.ttl.max(self.lessor.min_ttl),
        };
        match self
            .node
            .write(encoded_len, Command::LeaseGrant(grant))
            .await?
        {
            CommandResponse::LeaseGrant(granted) => Ok(Response::new(pb::LeaseGrantResponse {
                header: self.node.header(granted.revision),
                id: granted.id,
                ttl: granted.ttl,
                error: String::new(),
            })),
            other => mismatched(&other),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let request = request.into_inner();
        let encoded_len = request.encoded_len();
        let command = Command::LeaseRevoke(LeaseRevokeRequest { id: request.id });
        match self.node.write(encoded_len, command).await? {
            CommandResponse::LeaseRevoke(revoked) => Ok(Response::new(pb::LeaseRevokeResponse {
                header: self.node.header(revoked.revision),
            })),
            other => mismatched(&other),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// Answers each renewal in order. A renewal of a lease that does not exist is answered with
    /// TTL 0, as etcd does; losing the leader ends the stream with the error.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let node = self.node.clone();
        let lessor = self.lessor.clone();
        let renewals = request.into_inner().then(move |renewal| {
            let node = node.clone();
            let lessor = lessor.clone();
            async move {
                let id = renewal?.id;
                let ttl = lessor.keep_alive(id).await?;
                let revision = node.replica.kernel().read().await.revision();
                Ok(pb::LeaseKeepAliveResponse {
                    header: node.header(revision),
                    id,
                    ttl,
                })
            }
        });
        Ok(Response::new(Box::pin(renewals)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        self.node.prepare_read(false).await?;
        let (lease, revision) = {
            let kernel = self.node.replica.kernel().read().await;
            (kernel.lease(request.id), kernel.revision())
        };
        let Some(lease) = lease else {
            return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: self.node.header(revision),
                id: request.id,
                ttl: -1,
                ..Default::default()
            }));
        };
        let ttl = self.lessor.remaining(request.id).await?;
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: self.node.header(revision),
            id: request.id,
            ttl,
            granted_ttl: lease.ttl,
            keys: if request.keys { lease.keys } else { Vec::new() },
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.node.prepare_read(false).await?;
        let kernel = self.node.replica.kernel().read().await;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.node.header(kernel.revision()),
            leases: kernel
                .lease_ttls()
                .into_iter()
                .map(|(id, _)| pb::LeaseStatus { id })
                .collect(),
        }))
    }
}
