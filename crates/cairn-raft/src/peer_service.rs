//! The server side of the peer network: `cairn.v1.Peer`, answering other members of the cluster.

use cairn_proto::cairn_v1::PeerMessage;
use cairn_proto::cairn_v1::peer_server::{Peer, PeerServer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::codec;
use crate::replica::{MembershipChange, ReadIndexError, Replica, ReplicaError};
use crate::types::{Batch, TypeConfig};

/// Serves Raft's messages and what followers pass to the leader.
pub struct PeerService {
    replica: Replica,
}

impl PeerService {
    /// The service, ready to add to a tonic server; it accepts messages of any size, since a
    /// snapshot chunk or a batch of entries is bounded by Raft's settings, not by the client API.
    pub fn server(replica: Replica) -> PeerServer<PeerService> {
        PeerServer::new(PeerService { replica })
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }
}

fn decode<T: DeserializeOwned>(request: Request<PeerMessage>) -> Result<T, Status> {
    codec::decode(&request.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
}

fn reply<T: Serialize>(answer: &T) -> Result<Response<PeerMessage>, Status> {
    Ok(Response::new(PeerMessage {
        payload: codec::encode(answer),
    }))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let request: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(request)?;
        reply(&self.replica.raft().append_entries(request).await)
    }

    async fn vote(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let request: openraft::raft::VoteRequest<u64> = decode(request)?;
        reply(&self.replica.raft().vote(request).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let request: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(request)?;
        reply(&self.replica.raft().install_snapshot(request).await)
    }

    async fn forward(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let batch: Batch = decode(request)?;
        reply(&self.replica.leader_write(batch).await)
    }

    async fn read_index(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let () = decode(request)?;
        let answer = match self.replica.leader_read_index().await {
            Ok(index) => Ok(index),
            Err(ReadIndexError::NotLeader(_)) => Err(ReplicaError::NoLeader),
            Err(ReadIndexError::Failed(error)) => Err(error),
        };
        reply(&answer)
    }

    async fn change_members(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let change: MembershipChange = decode(request)?;
        reply(&self.replica.leader_change(&change).await)
    }

    async fn elect(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let () = decode(request)?;
        reply(&self.replica.stand_for_election().await)
    }
}
