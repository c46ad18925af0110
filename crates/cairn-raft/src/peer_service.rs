//! The server side of the peer network: `cairn.v1.Peer`, answering other members of the cluster.

use cairn_proto::cairn_v1::peer_server::{Peer, PeerServer};
use cairn_proto::cairn_v1::{
    IdentifyRequest, IdentifyResponse, PeerCallMessage, PeerMember, PeerMessage,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::network::PeerCall;
use crate::peer_calls::{CallAnswers, answer_calls};
use crate::peer_identity::Sender;
use crate::peer_stream::{Answers, answer_each};
use crate::replica::{MembershipChange, ReadIndexError, Replica, ReplicaError};
use crate::types::{Batch, TypeConfig};

/// Serves Raft's messages and what followers pass to the leader.
pub struct PeerService {
    replica: Replica,
    /// Turns true when the server stops, which ends the streams it serves.
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

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    codec::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
}

/// Whether a call must come from a member this member knows. A member whose membership is
/// behind may not know a leader or a voter added since, and must still take the leader's entries
/// and snapshots and answer the voter's votes, or an election could stall with a quorum up; a
/// removed member's votes fail Raft's own checks, since its log lacks the entry that removed it.
/// The other calls go to the leader from its members, or, for a leader transfer, from the
/// leader to a member that holds its whole log, so both ends know each other: a write, a read, a
/// membership change or a transfer from anyone else is refused, and a removed member cannot act
/// on the cluster.
fn needs_member(call: PeerCall) -> bool {
    match call {
        PeerCall::Vote | PeerCall::InstallSnapshot => false,
        PeerCall::Forward | PeerCall::ReadIndex | PeerCall::ChangeMembers | PeerCall::Elect => true,
    }
}

/// Answers one call from peer `from`: which call, then its argument. Fails only when it cannot
/// read or take the call, before acting on it; every outcome of acting goes back in the answer.
async fn answer(replica: Replica, from: Sender, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
    let (call, request) = codec::decode_prefix::<PeerCall>(&payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable peer call: {e}")))?;
    if needs_member(call) {
        replica.admit_member(from)?;
    }
    let raft = replica.raft();
    Ok(match call {
        PeerCall::Vote => {
            let request: openraft::raft::VoteRequest<u64> = decode(request)?;
            codec::encode(&raft.vote(request).await)
        }
        PeerCall::InstallSnapshot => {
            let request: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(request)?;
            codec::encode(&raft.install_snapshot(request).await)
        }
        PeerCall::Forward => {
            let batch: Batch = decode(request)?;
            codec::encode(&replica.leader_write(batch).await)
        }
        PeerCall::ReadIndex => {
            let () = decode(request)?;
            let answer = match replica.leader_read_index().await {
                Ok(index) => Ok(index),
                Err(ReadIndexError::NotLeader(_)) => Err(ReplicaError::NoLeader),
                Err(ReadIndexError::Failed(error)) => Err(error),
            };
            codec::encode(&answer)
        }
        PeerCall::ChangeMembers => {
            let change: MembershipChange = decode(request)?;
            codec::encode(&replica.leader_change(&change).await)
        }
        PeerCall::Elect => {
            let () = decode(request)?;
            codec::encode(&replica.stand_for_election().await)
        }
    })
}

#[tonic::async_trait]
impl Peer for PeerService {
    type ReplicateStream = Answers;
    type CallsStream = CallAnswers;

    async fn replicate(
        &self,
        requests: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<Answers>, Status> {
        self.replica.admit(requests.metadata())?;
        let raft = self.replica.raft().clone();
        let answers = answer_each(
            requests.into_inner(),
            self.stopped.clone(),
            move |message| {
                let raft = raft.clone();
                async move {
                    let request: openraft::raft::AppendEntriesRequest<TypeConfig> =
                        decode(&message.payload)?;
                    Ok(PeerMessage {
                        payload: codec::encode(&raft.append_entries(request).await),
                    })
                }
            },
        );
        Ok(Response::new(answers))
    }

    async fn calls(
        &self,
        calls: Request<Streaming<PeerCallMessage>>,
    ) -> Result<Response<CallAnswers>, Status> {
        let from = self.replica.admit(calls.metadata())?;
        let replica = self.replica.clone();
        let answers = answer_calls(calls.into_inner(), self.stopped.clone(), move |payload| {
            answer(replica.clone(), from, payload)
        });
        Ok(Response::new(answers))
    }

    async fn identify(
        &self,
        _: Request<IdentifyRequest>,
    ) -> Result<Response<IdentifyResponse>, Status> {
        let identity = self.replica.identity();
        let members = self
            .replica
            .members()
            .into_iter()
            .map(|status| PeerMember {
                id: status.id,
                peer_urls: status.member.peer_urls,
            })
            .collect();
        Ok(Response::new(IdentifyResponse {
            cluster_id: identity.cluster_id,
            member_id: identity.member_id,
            members,
        }))
    }
}
