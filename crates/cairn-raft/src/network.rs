//! The client side of the peer network: one reused HTTP/2 connection per peer, carrying Raft's
//! messages encoded with postcard on long-lived streams of two kinds: replication, one request at
//! a time per stream (`peer_stream`), and every other call, many at once on one stream
//! (`peer_calls`). Each stream is opened for one member of this cluster, and says so in its
//! headers (`peer_identity`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::cairn_v1::peer_client::PeerClient;
use cairn_proto::cairn_v1::{IdentifyRequest, IdentifyResponse, PeerMessage};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::codec;
use crate::peer_calls::CallStream;
use crate::peer_identity::{ClusterId, PeerIdentity, Throttle, log_refused_by};
use crate::peer_stream::ReplicationStream;
use crate::synced::SyncedLog;
use crate::types::{LogId, Member, MemberId, TypeConfig};

/// What a call to a peer asks of it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum PeerCall {
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
    ChangeMembers,
    Elect,
}

/// A member to send to: its ID, which its streams name, and the URL it is reached at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PeerAddress {
    pub(crate) id: MemberId,
    pub(crate) url: String,
}

/// Connections to peers by URL, and the streams on them by member, shared by every sender on
/// this member.
#[derive(Clone)]
pub struct Peers {
    /// Who this member is, as every stream it opens says.
    identity: PeerIdentity,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    calls: Arc<Mutex<HashMap<PeerAddress, CallStreamSlot>>>,
    /// Replication streams with no request on them. openraft makes a new link for each round
    /// of a leadership check (ReadIndex) while its replication link to the same peer may be
    /// mid-request, so streams are shared through this pool rather than owned by a link.
    idle_replication: Arc<Mutex<HashMap<PeerAddress, Vec<ReplicationStream>>>>,
    /// Refusals of this member by its peers, logged a few times a minute at most.
    refused_by: Arc<Throttle<String>>,
}

/// Idle replication streams kept per peer; more come only from exchanges that overlapped.
const IDLE_REPLICATION_STREAMS_MAX: usize = 4;

/// The stream of calls to one peer, if open. Whoever finds it missing opens it while holding
/// the slot, so calls that start together share one stream.
type CallStreamSlot = Arc<tokio::sync::Mutex<Option<Arc<CallStream>>>>;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer could not be reached or did not answer in time: the call may or may not have
    /// taken effect there.
    #[error("peer {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The peer refused the connection, so the call never left this member: safe to retry
    /// elsewhere, even when it writes.
    #[error("peer {url} refused the connection")]
    Refused { url: String },
    #[error("peer {url} sent an answer this member cannot read: {reason}")]
    Garbled { url: String, reason: String },
    /// The peer answered that it could not take the call, so it did not act on it.
    #[error("peer {url} could not take the call: {reason}")]
    Rejected { url: String, reason: String },
    /// The peer refused this member itself: it belongs to another cluster, is another member
    /// than the one this member meant, or does not count this member as one of its cluster's.
    /// Nothing was acted on.
    #[error("peer {url} refused this member: {reason}")]
    NotAccepted { url: String, reason: String },
}

impl CallError {
    /// The error a failed call to `url` came to.
    pub(crate) fn from_status(url: &str, status: &tonic::Status) -> CallError {
        if status.code() == tonic::Code::FailedPrecondition {
            CallError::NotAccepted {
                url: url.to_string(),
                reason: status.message().to_string(),
            }
        } else if connection_refused(status) {
            CallError::Refused {
                url: url.to_string(),
            }
        } else {
            CallError::Unreachable {
                url: url.to_string(),
                reason: status.to_string(),
            }
        }
    }
}

impl Peers {
    /// Connections from the member `identity` names, none open yet.
    pub(crate) fn new(identity: PeerIdentity) -> Peers {
        Peers {
            identity,
            channels: Arc::default(),
            calls: Arc::default(),
            idle_replication: Arc::default(),
            refused_by: Arc::default(),
        }
    }

    /// Who this member is to its peers.
    pub(crate) fn identity(&self) -> PeerIdentity {
        self.identity
    }

    /// A request to `peer` that names this member's cluster, this member and `peer`.
    pub(crate) fn request<T>(&self, peer: &PeerAddress, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.identity.stamp(request.metadata_mut(), peer.id);
        request
    }

    /// Logs, a few times a minute at most, that `error` is a peer's refusal of this member.
    pub(crate) fn note_refusal(&self, error: &CallError) {
        if let CallError::NotAccepted { url, reason } = error {
            log_refused_by(&self.refused_by, url, reason);
        }
    }

    /// The shared connection to `url`, opened on first use.
    fn channel(&self, url: &str) -> Result<Channel, CallError> {
        let mut channels = self.channels.lock().expect("peer channel map poisoned");
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = endpoint(url)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// A client of the peer at `url` on the shared connection, for messages of any size: a
    /// snapshot chunk or a batch of entries is bounded by Raft's settings, not the client API's.
    pub(crate) fn client(&self, url: &str) -> Result<PeerClient<Channel>, CallError> {
        Ok(PeerClient::new(self.channel(url)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// Sends `request` to `peer` and decodes its answer.
    pub(crate) async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        peer: &PeerAddress,
        call: PeerCall,
        request: &Q,
        timeout: Duration,
    ) -> Result<A, CallError> {
        let payload = codec::encode(&(call, request));
        let answer = tokio::time::timeout(timeout, async {
            self.call_stream(peer).await?.call(payload).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(CallError::Unreachable {
                url: peer.url.clone(),
                reason: format!("no answer within {timeout:?}"),
            })
        });
        if let Err(error) = &answer {
            self.note_refusal(error);
        }
        decode_answer(&peer.url, &answer?)
    }

    /// An idle replication stream to `peer`, if there is one.
    fn idle_replication(&self, peer: &PeerAddress) -> Option<ReplicationStream> {
        self.idle_replication
            .lock()
            .expect("idle replication streams poisoned")
            .get_mut(peer)?
            .pop()
    }

    /// Keeps `stream`, whose last request was answered, for the next exchange with `peer`.
    fn replication_done(&self, peer: &PeerAddress, stream: ReplicationStream) {
        let mut idle = self
            .idle_replication
            .lock()
            .expect("idle replication streams poisoned");
        let streams = idle.entry(peer.clone()).or_default();
        if streams.len() < IDLE_REPLICATION_STREAMS_MAX {
            streams.push(stream);
        }
    }

    /// The open stream of calls to `peer`, opened anew if there is none.
    async fn call_stream(&self, peer: &PeerAddress) -> Result<Arc<CallStream>, CallError> {
        let slot = self
            .calls
            .lock()
            .expect("peer call streams poisoned")
            .entry(peer.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        match &*slot {
            Some(stream) if stream.is_open() => Ok(stream.clone()),
            _ => {
                let stream = Arc::new(CallStream::open(self, peer).await?);
                Ok(slot.insert(stream).clone())
            }
        }
    }
}

/// A member's answer to who it is: its cluster, its own ID, and the members it knows of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: ClusterId,
    pub member_id: MemberId,
    /// Each member's ID and peer URLs, voters and learners.
    pub members: Vec<(MemberId, Vec<String>)>,
}

/// Asks the member at `url` who it is, for a member that has yet to learn which cluster it
/// joins; fails if nothing answers there within `timeout`.
pub async fn identify(url: &str, timeout: Duration) -> Result<ClusterView, CallError> {
    let channel = endpoint(url)?.connect_timeout(timeout).connect_lazy();
    let mut client = PeerClient::new(channel);
    let mut request = tonic::Request::new(IdentifyRequest {});
    request.set_timeout(timeout);
    let answer = match tokio::time::timeout(timeout, client.identify(request)).await {
        Ok(Ok(answer)) => answer.into_inner(),
        Ok(Err(status)) => return Err(CallError::from_status(url, &status)),
        Err(_) => {
            return Err(CallError::Unreachable {
                url: url.to_string(),
                reason: format!("no answer within {timeout:?}"),
            });
        }
    };
    let IdentifyResponse {
        cluster_id,
        member_id,
        members,
    } = answer;
    Ok(ClusterView {
        cluster_id,
        member_id,
        members: members
            .into_iter()
            .map(|member| (member.id, member.peer_urls))
            .collect(),
    })
}

/// Where a connection to the peer at `url` would go.
fn endpoint(url: &str) -> Result<Endpoint, CallError> {
    Endpoint::from_shared(url.to_string()).map_err(|e| CallError::Unreachable {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes the answer the peer at `url` sent.
fn decode_answer<A: DeserializeOwned>(url: &str, answer: &[u8]) -> Result<A, CallError> {
    codec::decode(answer).map_err(|e| CallError::Garbled {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// Whether `status` reports a connection the peer refused: a request is only sent over an
/// established connection, so this one was never sent.
fn connection_refused(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Where Raft traffic for member `id` goes: the first of its peer URLs.
pub(crate) fn peer_address(id: MemberId, member: &Member) -> Option<PeerAddress> {
    let url = member.peer_urls.first()?;
    Some(PeerAddress {
        id,
        url: url.clone(),
    })
}

/// The network openraft replicates over: the shared peer connections, and how far this member's
/// own log is on disk.
pub struct PeerNetwork {
    pub(crate) peers: Peers,
    pub(crate) synced: SyncedLog,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: MemberId, member: &Member) -> PeerLink {
        PeerLink {
            peers: self.peers.clone(),
            synced: self.synced.clone(),
            peer: peer_address(target, member).unwrap_or(PeerAddress {
                id: target,
                url: String::new(),
            }),
        }
    }
}

/// Raft's view of one peer.
pub struct PeerLink {
    peers: Peers,
    synced: SyncedLog,
    peer: PeerAddress,
}

impl PeerLink {
    async fn send<Q: Serialize, A: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        call: PeerCall,
        request: &Q,
        option: &RPCOption,
    ) -> Result<A, RPCError<MemberId, Member, E>> {
        let answer: Result<A, E> = self
            .peers
            .call(&self.peer, call, request, option.hard_ttl())
            .await
            .map_err(rpc_error)?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.peer.id, error)))
    }

    /// Sends `request` on an idle replication stream to the peer, or on a new one.
    async fn replicate(
        &mut self,
        request: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RPCError<MemberId, Member, RaftError<MemberId>>>
    {
        let message = PeerMessage {
            payload: codec::encode(request),
        };
        let timeout = option.hard_ttl();
        // The stream is out of the pool while a request is on it, and goes back only once its
        // answer is read: a call that fails, or that openraft stops waiting for, drops it, so
        // an answer still on its way can never be read as the next request's.
        let exchanged = tokio::time::timeout(timeout, async {
            let mut stream = match self.peers.idle_replication(&self.peer) {
                Some(stream) => stream,
                None => ReplicationStream::open(&self.peers, &self.peer).await?,
            };
            let answer = stream.exchange(message).await?;
            Ok((stream, answer))
        })
        .await
        .unwrap_or_else(|_| {
            Err(CallError::Unreachable {
                url: self.peer.url.clone(),
                reason: format!("no answer within {timeout:?}"),
            })
        });
        if let Err(error) = &exchanged {
            self.peers.note_refusal(error);
        }
        let (stream, answer) = exchanged.map_err(rpc_error)?;
        self.peers.replication_done(&self.peer, stream);
        let answer: Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>> =
            decode_answer(&self.peer.url, &answer.payload).map_err(rpc_error)?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.peer.id, error)))
    }
}

/// How openraft is told of a call that failed on the way.
fn rpc_error<E: std::error::Error>(error: CallError) -> RPCError<MemberId, Member, E> {
    match error {
        // A peer that refuses this member is, for Raft, a peer it cannot reach.
        CallError::Unreachable { .. }
        | CallError::Refused { .. }
        | CallError::NotAccepted { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        CallError::Garbled { .. } | CallError::Rejected { .. } => {
            RPCError::Network(NetworkError::new(&error))
        }
    }
}

/// The last entry of `request`, up to `acknowledged`, that this member's sync at `synced` covers.
fn last_synced(
    request: &AppendEntriesRequest<TypeConfig>,
    acknowledged: Option<LogId>,
    synced: Option<LogId>,
) -> Option<LogId> {
    request
        .entries
        .iter()
        .rev()
        .map(|entry| entry.log_id)
        .find(|id| Some(*id) <= synced && Some(*id) <= acknowledged)
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RPCError<MemberId, Member, RaftError<MemberId>>>
    {
        let started = std::time::Instant::now();
        let sent = request
            .entries
            .last()
            .map(|entry| entry.log_id)
            .or(request.prev_log_id);
        let unsynced = |closed| RPCError::Unreachable(Unreachable::new(&closed));
        // The leader reports its own entries written before they are synced (see log_store).
        // A leader that is the only voter commits on that report alone, so its commit index may
        // run ahead of its disk; learners must not apply what it could still lose.
        self.synced
            .covering(request.leader_commit)
            .await
            .map_err(unsynced)?;
        let answer = self.replicate(&request, &option).await?;
        let acknowledged = match answer {
            AppendEntriesResponse::Success => sent,
            AppendEntriesResponse::PartialSuccess(matching) => matching,
            AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => {
                return Ok(answer);
            }
        };
        // A follower's acknowledgement may count towards a quorum only once this member's copy
        // of what it acknowledges is on disk too. openraft allows the whole call one heartbeat
        // interval; should this member's sync take longer, it acknowledges only the last sent
        // entry its sync covers by then, and openraft sends the rest again, or fails the call as
        // a timeout when the sync covers none of them.
        let patience = option.soft_ttl().saturating_sub(started.elapsed());
        if let Ok(covered) =
            tokio::time::timeout(patience, self.synced.covering(acknowledged)).await
        {
            covered.map_err(unsynced)?;
            return Ok(answer);
        }
        match last_synced(&request, acknowledged, self.synced.current()) {
            Some(covered) => Ok(AppendEntriesResponse::PartialSuccess(Some(covered))),
            None => Err(RPCError::Timeout(Timeout {
                action: RPCTypes::AppendEntries,
                id: request.vote.leader_id.node_id,
                target: self.peer.id,
                timeout: option.soft_ttl(),
            })),
        }
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<MemberId>,
        RPCError<MemberId, Member, RaftError<MemberId, InstallSnapshotError>>,
    > {
        self.send(PeerCall::InstallSnapshot, &request, &option)
            .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RPCError<MemberId, Member, RaftError<MemberId>>> {
        self.send(PeerCall::Vote, &request, &option).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use cairn_proto::cairn_v1::peer_server::{Peer, PeerServer};
    use cairn_proto::cairn_v1::{IdentifyRequest, IdentifyResponse, PeerCallMessage, PeerMessage};
    use openraft::error::RaftError;
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use openraft::{CommittedLeaderId, EntryPayload};
    use tokio::sync::watch;
    use tonic::transport::server::TcpIncoming;
    use tonic::{Request, Response, Status, Streaming};

    use super::{CallError, PeerAddress, PeerCall, PeerLink, PeerNetwork, Peers};
    use crate::codec;
    use crate::peer_calls::{CallAnswers, answer_calls};
    use crate::peer_identity::{PeerIdentity, Refusal};
    use crate::peer_stream::{Answers, answer_each};
    use crate::synced::SyncedLog;
    use crate::types::{Entry, LogId, Member, MemberId, TypeConfig, Vote};

    /// The cluster of the members these tests send from (member 1) and to (member 2).
    const CLUSTER: u64 = 0xc1;
    const SENDER: PeerIdentity = PeerIdentity {
        cluster_id: CLUSTER,
        member_id: 1,
        takes_unlabelled: false,
    };
    const RECEIVER: PeerIdentity = PeerIdentity {
        member_id: 2,
        ..SENDER
    };

    fn receiver_at(url: &str) -> PeerAddress {
        PeerAddress {
            id: RECEIVER.member_id,
            url: url.to_string(),
        }
    }

    async fn call(url: &str) -> Result<(), CallError> {
        Peers::new(SENDER)
            .call::<_, ()>(
                &receiver_at(url),
                PeerCall::ReadIndex,
                &(),
                Duration::from_millis(300),
            )
            .await
    }

    #[tokio::test]
    async fn a_peer_that_is_not_listening_refuses_and_nothing_was_sent() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let error = call(&url).await.unwrap_err();
        assert!(
            matches!(error, CallError::Refused { .. }),
            "expected a refusal, got {error}"
        );
    }

    #[tokio::test]
    async fn a_peer_that_accepts_and_never_answers_is_unreachable_not_refused() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let (connection, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(connection);
        });
        let error = call(&url).await.unwrap_err();
        assert!(
            matches!(error, CallError::Unreachable { .. }),
            "a request that may have been sent must not count as refused, got {error}"
        );
        held.abort();
    }

    /// A peer, member 2 of [`CLUSTER`] unless made another, that admits streams as a member
    /// does and accepts every AppendEntries at once, counting them and the streams they came
    /// on; with `slow_first`, it answers the first request it receives only after that long, and
    /// with a conflict. It answers every other call, whatever the call, with the number of
    /// milliseconds the call names, after waiting that long; it refuses [`REFUSED_CALL`].
    #[derive(Clone)]
    struct AcceptingPeer {
        identity: PeerIdentity,
        received: Arc<AtomicUsize>,
        streams: Arc<AtomicUsize>,
        call_streams: Arc<AtomicUsize>,
        stopped: Arc<watch::Sender<bool>>,
        slow_first: Option<Duration>,
    }

    impl AcceptingPeer {
        fn new(slow_first: Option<Duration>) -> AcceptingPeer {
            AcceptingPeer {
                identity: RECEIVER,
                received: Arc::default(),
                streams: Arc::default(),
                call_streams: Arc::default(),
                stopped: Arc::new(watch::channel(false).0),
                slow_first,
            }
        }

        fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
            self.identity
                .admit(request.metadata())
                .map(|_| ())
                .map_err(Refusal::into_status)
        }
    }

    #[tonic::async_trait]
    impl Peer for AcceptingPeer {
        type ReplicateStream = Answers;
        type CallsStream = CallAnswers;

        async fn replicate(&self, requests: Request<Streaming<PeerMessage>>) -> Streamed {
            self.admit(&requests)?;
            self.streams.fetch_add(1, Ordering::SeqCst);
            let peer = self.clone();
            let answers = answer_each(requests.into_inner(), self.stopped.subscribe(), move |_| {
                let first = peer.received.fetch_add(1, Ordering::SeqCst) == 0;
                let delay = peer.slow_first.filter(|_| first);
                async move {
                    let answer = match delay {
                        Some(delay) => {
                            tokio::time::sleep(delay).await;
                            AppendEntriesResponse::Conflict
                        }
                        None => AppendEntriesResponse::Success,
                    };
                    let answer: Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>> =
                        Ok(answer);
                    Ok(PeerMessage {
                        payload: codec::encode(&answer),
                    })
                }
            });
            Ok(Response::new(answers))
        }

        async fn calls(&self, calls: Request<Streaming<PeerCallMessage>>) -> CallsStreamed {
            self.admit(&calls)?;
            self.call_streams.fetch_add(1, Ordering::SeqCst);
            let answers = answer_calls(
                calls.into_inner(),
                self.stopped.subscribe(),
                |payload| async move {
                    let (_, request) = codec::decode_prefix::<PeerCall>(&payload).unwrap();
                    let millis: u64 = codec::decode(request).unwrap();
                    if millis == REFUSED_CALL {
                        return Err(Status::invalid_argument("refused on purpose"));
                    }
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    Ok(codec::encode(&millis))
                },
            );
            Ok(Response::new(answers))
        }

        async fn identify(
            &self,
            _: Request<IdentifyRequest>,
        ) -> Result<Response<IdentifyResponse>, Status> {
            Ok(Response::new(IdentifyResponse {
                cluster_id: self.identity.cluster_id,
                member_id: self.identity.member_id,
                members: Vec::new(),
            }))
        }
    }

    /// The call [`AcceptingPeer`] refuses.
    const REFUSED_CALL: u64 = u64::MAX;

    type Streamed = Result<Response<Answers>, Status>;
    type CallsStreamed = Result<Response<CallAnswers>, Status>;

    /// Serves `peer` on a port of its own; returns its URL.
    async fn serve(peer: AcceptingPeer) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PeerServer::new(peer))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        url
    }

    /// The network of a leader whose sync has reached nothing yet, and `peer` as a member of its
    /// cluster; returns them and the leader's sync.
    async fn network_to(
        peer: AcceptingPeer,
    ) -> (PeerNetwork, Member, watch::Sender<Option<LogId>>) {
        let url = serve(peer).await;
        let (synced, synced_receiver) = watch::channel(None);
        let network = PeerNetwork {
            peers: Peers::new(SENDER),
            synced: SyncedLog::new(synced_receiver),
        };
        let member = Member {
            peer_urls: vec![url],
            ..Member::default()
        };
        (network, member, synced)
    }

    /// A link to `peer`, from a leader whose sync has reached nothing yet; returns the link and
    /// the leader's sync.
    async fn link_to(peer: AcceptingPeer) -> (PeerLink, watch::Sender<Option<LogId>>) {
        let (mut network, member, synced) = network_to(peer).await;
        (
            network.new_client(RECEIVER.member_id, &member).await,
            synced,
        )
    }

    /// A link to a peer that accepts everything at once, from a leader whose sync has reached
    /// nothing yet; returns the link, the leader's sync, and the peer.
    async fn link_to_accepting_peer() -> (PeerLink, watch::Sender<Option<LogId>>, AcceptingPeer) {
        let peer = AcceptingPeer::new(None);
        let (link, synced) = link_to(peer.clone()).await;
        (link, synced, peer)
    }

    fn append_request(
        entries: Vec<Entry>,
        leader_commit: Option<LogId>,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries,
            leader_commit,
        }
    }

    fn send(
        mut link: PeerLink,
        request: AppendEntriesRequest<TypeConfig>,
        hard_ttl: Duration,
    ) -> tokio::task::JoinHandle<Result<AppendEntriesResponse<MemberId>, impl std::fmt::Debug>>
    {
        tokio::spawn(async move { link.append_entries(request, RPCOption::new(hard_ttl)).await })
    }

    fn entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes
            .map(|index| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_followers_acknowledgement_waits_until_the_leaders_own_copy_is_synced() {
        let (link, synced, peer) = link_to_accepting_peer().await;
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
        let entry = Entry {
            log_id,
            payload: EntryPayload::Blank,
        };
        let sending = send(
            link,
            append_request(vec![entry], None),
            Duration::from_secs(5),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            peer.received.load(Ordering::SeqCst),
            1,
            "sent before the sync"
        );
        assert!(
            !sending.is_finished(),
            "the follower's acknowledgement was passed on before the leader's copy was synced"
        );
        synced.send_replace(Some(log_id));
        let answer = sending.await.unwrap().unwrap();
        assert_eq!(answer, AppendEntriesResponse::Success);
    }

    #[tokio::test]
    async fn a_commit_index_is_sent_only_once_the_leaders_copy_is_synced() {
        let (link, synced, peer) = link_to_accepting_peer().await;
        let committed = LogId::new(CommittedLeaderId::new(1, 1), 4);
        let sending = send(
            link,
            append_request(Vec::new(), Some(committed)),
            Duration::from_secs(5),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            peer.received.load(Ordering::SeqCst),
            0,
            "a commit index beyond the leader's sync reached a peer"
        );
        synced.send_replace(Some(committed));
        sending.await.unwrap().unwrap();
        assert_eq!(peer.received.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_sync_slower_than_the_call_allows_acknowledges_only_what_it_covers() {
        let (link, synced, _peer) = link_to_accepting_peer().await;
        synced.send_replace(Some(LogId::new(CommittedLeaderId::new(1, 1), 2)));
        let answer = send(
            link,
            append_request(entries(1..=3), None),
            Duration::from_millis(400),
        )
        .await
        .unwrap()
        .unwrap();
        let covered = LogId::new(CommittedLeaderId::new(1, 1), 2);
        assert_eq!(answer, AppendEntriesResponse::PartialSuccess(Some(covered)));
    }

    #[tokio::test]
    async fn a_sync_that_covers_nothing_sent_in_time_fails_the_call() {
        let (link, _synced, _peer) = link_to_accepting_peer().await;
        let answer = send(
            link,
            append_request(entries(1..=3), None),
            Duration::from_millis(400),
        )
        .await
        .unwrap();
        assert!(
            answer.is_err(),
            "acknowledged entries not on the leader's disk: {answer:?}"
        );
    }

    #[tokio::test]
    async fn requests_share_one_stream_until_the_peer_ends_it() {
        let (mut link, synced, peer) = link_to_accepting_peer().await;
        synced.send_replace(Some(LogId::new(CommittedLeaderId::new(1, 1), 9)));
        let option = || RPCOption::new(Duration::from_secs(5));
        for index in 1..=3 {
            let request = append_request(entries(index..=index), None);
            let answer = link.append_entries(request, option()).await.unwrap();
            assert_eq!(answer, AppendEntriesResponse::Success);
        }
        assert_eq!(peer.received.load(Ordering::SeqCst), 3);
        assert_eq!(peer.streams.load(Ordering::SeqCst), 1);

        // A stopping server ends its streams; the call on the ended stream fails rather than
        // waiting, and the next one opens a new stream.
        peer.stopped.send_replace(true);
        let ended = link
            .append_entries(append_request(entries(4..=4), None), option())
            .await;
        assert!(ended.is_err(), "answered on an ended stream: {ended:?}");
        peer.stopped.send_replace(false);
        let answer = link
            .append_entries(append_request(entries(4..=4), None), option())
            .await
            .unwrap();
        assert_eq!(answer, AppendEntriesResponse::Success);
        assert_eq!(peer.streams.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn links_made_one_after_another_share_a_stream_and_overlapping_ones_do_not() {
        let peer = AcceptingPeer::new(None);
        let (mut network, member, synced) = network_to(peer.clone()).await;
        synced.send_replace(Some(LogId::new(CommittedLeaderId::new(1, 1), 9)));
        // openraft makes a new link for every leadership check.
        for index in 1..=3 {
            let mut link = network.new_client(RECEIVER.member_id, &member).await;
            let request = append_request(entries(index..=index), None);
            let answer = link
                .append_entries(request, RPCOption::new(Duration::from_secs(5)))
                .await
                .unwrap();
            assert_eq!(answer, AppendEntriesResponse::Success);
        }
        assert_eq!(peer.streams.load(Ordering::SeqCst), 1);
        // Requests at once each need a stream of their own.
        let (first, second) = (
            network.new_client(RECEIVER.member_id, &member).await,
            network.new_client(RECEIVER.member_id, &member).await,
        );
        let (a, b) = tokio::join!(
            send(
                first,
                append_request(entries(4..=4), None),
                Duration::from_secs(5)
            ),
            send(
                second,
                append_request(entries(4..=4), None),
                Duration::from_secs(5)
            ),
        );
        assert_eq!(a.unwrap().unwrap(), AppendEntriesResponse::Success);
        assert_eq!(b.unwrap().unwrap(), AppendEntriesResponse::Success);
        assert_eq!(peer.streams.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_late_answer_is_never_taken_for_the_next_requests() {
        let (mut link, synced) =
            link_to(AcceptingPeer::new(Some(Duration::from_millis(500)))).await;
        synced.send_replace(Some(LogId::new(CommittedLeaderId::new(1, 1), 9)));
        let first = link
            .append_entries(
                append_request(entries(1..=1), None),
                RPCOption::new(Duration::from_millis(100)),
            )
            .await;
        assert!(first.is_err(), "answered in time after all: {first:?}");
        // The first request's answer, a conflict, arrives while the second one waits.
        let second = link
            .append_entries(
                append_request(entries(1..=1), None),
                RPCOption::new(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert_eq!(second, AppendEntriesResponse::Success);
    }

    /// A peer serving calls, its URL, and a member's connections with none open yet.
    async fn calls_to_new_peer() -> (AcceptingPeer, String, Peers) {
        let peer = AcceptingPeer::new(None);
        let url = serve(peer.clone()).await;
        (peer, url, Peers::new(SENDER))
    }

    /// Calls `peer` at `url`, asking it to wait `millis` before it answers.
    async fn call_waiting(
        peers: &Peers,
        url: &str,
        millis: u64,
        timeout: Duration,
    ) -> Result<u64, CallError> {
        peers
            .call(&receiver_at(url), PeerCall::ReadIndex, &millis, timeout)
            .await
    }

    #[tokio::test]
    async fn calls_at_once_share_one_stream_and_each_gets_its_own_answer() {
        let (peer, url, peers) = calls_to_new_peer().await;
        let timeout = Duration::from_secs(5);
        // Answered in the order 100, 200, 300.
        let (a, b, c) = tokio::join!(
            call_waiting(&peers, &url, 300, timeout),
            call_waiting(&peers, &url, 100, timeout),
            call_waiting(&peers, &url, 200, timeout),
        );
        assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (300, 100, 200));
        assert_eq!(peer.call_streams.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_call_the_peer_refuses_fails_alone_and_the_stream_goes_on() {
        let (peer, url, peers) = calls_to_new_peer().await;
        let timeout = Duration::from_secs(5);
        let refused_later = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            call_waiting(&peers, &url, REFUSED_CALL, timeout).await
        };
        let (waiting, refused) =
            tokio::join!(call_waiting(&peers, &url, 300, timeout), refused_later);
        match refused {
            Err(CallError::Rejected { reason, .. }) => {
                assert!(reason.contains("refused on purpose"), "{reason}")
            }
            other => panic!("expected the call to be rejected, got {other:?}"),
        }
        assert_eq!(
            waiting.unwrap(),
            300,
            "the call in flight beside it is answered"
        );
        assert_eq!(call_waiting(&peers, &url, 0, timeout).await.unwrap(), 0);
        assert_eq!(peer.call_streams.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_its_caller_gave_up_on_goes_to_no_one_else() {
        let (peer, url, peers) = calls_to_new_peer().await;
        let gave_up = call_waiting(&peers, &url, 400, Duration::from_millis(100)).await;
        assert!(
            matches!(gave_up, Err(CallError::Unreachable { .. })),
            "{gave_up:?}"
        );
        // The late answer, 400, arrives while this call waits for its own.
        let next = call_waiting(&peers, &url, 600, Duration::from_secs(5)).await;
        assert_eq!(next.unwrap(), 600);
        assert_eq!(peer.call_streams.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stopping_peer_answers_the_calls_it_took_and_the_next_call_opens_a_new_stream() {
        let (peer, url, peers) = calls_to_new_peer().await;
        let timeout = Duration::from_secs(5);
        let taken = {
            let (peers, url) = (peers.clone(), url.clone());
            tokio::spawn(async move { call_waiting(&peers, &url, 300, timeout).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        peer.stopped.send_replace(true);
        assert_eq!(taken.await.unwrap().unwrap(), 300);
        // The stream has ended; once the peer serves again, a call opens another.
        tokio::time::sleep(Duration::from_millis(100)).await;
        peer.stopped.send_replace(false);
        assert_eq!(call_waiting(&peers, &url, 0, timeout).await.unwrap(), 0);
        assert_eq!(peer.call_streams.load(Ordering::SeqCst), 2);
    }

    /// A peer that is member 2 of another cluster.
    fn peer_of_another_cluster() -> AcceptingPeer {
        AcceptingPeer {
            identity: PeerIdentity {
                cluster_id: 0xc2,
                ..RECEIVER
            },
            ..AcceptingPeer::new(None)
        }
    }

    #[tokio::test]
    async fn a_peer_of_another_cluster_refuses_calls_and_replication_before_reading_them() {
        let peer = peer_of_another_cluster();
        let (mut link, synced) = link_to(peer.clone()).await;
        synced.send_replace(Some(LogId::new(CommittedLeaderId::new(1, 1), 9)));
        let replicated = link
            .append_entries(
                append_request(entries(1..=1), None),
                RPCOption::new(Duration::from_secs(5)),
            )
            .await;
        assert!(replicated.is_err(), "{replicated:?}");
        assert_eq!(
            peer.received.load(Ordering::SeqCst),
            0,
            "a message was read"
        );

        let url = serve(peer.clone()).await;
        let refused = call_waiting(&Peers::new(SENDER), &url, 0, Duration::from_secs(5)).await;
        match refused {
            Err(CallError::NotAccepted { reason, .. }) => assert!(
                reason.contains("cluster c2") && reason.contains("cluster c1"),
                "{reason}"
            ),
            other => panic!("expected a refusal of this member, got {other:?}"),
        }
        assert_eq!(peer.call_streams.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_stream_meant_for_another_member_is_refused() {
        let (peer, url, peers) = calls_to_new_peer().await;
        let elsewhere = PeerAddress {
            id: 3,
            url: url.clone(),
        };
        let refused: Result<u64, _> = peers
            .call(
                &elsewhere,
                PeerCall::ReadIndex,
                &0u64,
                Duration::from_secs(5),
            )
            .await;
        assert!(
            matches!(&refused, Err(CallError::NotAccepted { reason, .. }) if reason.contains("meant for member 3")),
            "{refused:?}"
        );
        assert_eq!(peer.call_streams.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn identify_names_the_cluster_and_member_at_a_url() {
        let url = serve(peer_of_another_cluster()).await;
        let view = super::identify(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!((view.cluster_id, view.member_id), (0xc2, 2));
    }
}
