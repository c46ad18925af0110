//! The server side of the peer network: `cairn.v1.Peer`, answering other members of the cluster.

use cairn_proto::cairn_v1::PeerMessage;
use cairn_proto::cairn_v1::peer_server::{Peer, PeerServer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::peer_stream::{Answers, answer_each};
use crate::replica::{MembershipChange, ReadIndexError, Replica, ReplicaError};
use crate::types::{Batch, TypeConfig};

/// Serves Raft's messages and what followers pass to the leader.
pub struct PeerService {
    replica: Replica,
    /// Turns true when the server stops, which ends the replication streams it serves.
    stopped: watch::Receiver<bool>,
}

impl PeerService {
    /// The service, ready to add to a tonic server that stops once `stopped` turns true; it
    /// accepts messages of any size, since a snapshot chunk or a batch of entries is bounded by
    /// Raft's settings, not by the client API.
    pub fn server(replica: Replica, stopped: watch::Receiver<bool>) -> PeerServer<PeerService> {
        PeerServer::new(PeerService { replica, stopped })
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }
}

fn decode<T: DeserializeOwned>(request: Request<PeerMessage>) -> Result<T, Status> {
    decode_message(&request.into_inner())
}

fn decode_message<T: DeserializeOwned>(message: &PeerMessage) -> Result<T, Status> {
    codec::decode(&message.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
}

fn reply<T: Serialize>(answer: &T) -> Result<Response<PeerMessage>, Status> {
    Ok(Response::new(encode_message(answer)))
}

fn encode_message<T: Serialize>(answer: &T) -> PeerMessage {
    PeerMessage {
        payload: codec::encode(answer),
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type ReplicateStream = Answers;

    async fn replicate(
        &self,
        requests: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Answers>, Status> {
        let raft = self.replica.raft().clone();
        let answers = answer_each(
            requests.into_inner(),
            self.stopped.clone(),
            move |message| {
                let raft = raft.clone();
                async move {
                    let request: openraft::raft::AppendEntriesRequest<TypeConfig> =
                        decode_message(&message)?;
                    Ok(encode_message(&raft.append_entries(request).await))
                }
            },
        );
        Ok(Response::new(answers))
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
