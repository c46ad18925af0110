//! Replication to a peer over one long-lived stream.
//!
//! openraft sends a peer one AppendEntries at a time and waits for the answer before the next,
//! so the leader's requests to a member travel as the messages of one `Replicate` stream, each
//! answered in turn. A unary call per request would open an HTTP/2 stream each time: a HEADERS
//! frame first and the body after it from a task of hyper's own, waking the receiving member
//! twice, after a pass through the channel's buffer task on the way out. On an open stream a
//! request is a single DATA frame, read by the task that answers it.

use std::pin::Pin;

use cairn_proto::cairn_v1::PeerMessage;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::network::{CallError, PeerAddress, Peers};

/// The answers of a `Replicate` stream, as the peer service returns them.
pub(crate) type Answers = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

/// This member's end of a `Replicate` stream to one peer.
pub(crate) struct ReplicationStream {
    url: String,
    requests: mpsc::Sender<PeerMessage>,
    answers: Streaming<PeerMessage>,
}

impl ReplicationStream {
    /// Opens a stream to `peer`, over the connection this member shares with its URL.
    pub(crate) async fn open(
        peers: &Peers,
        peer: &PeerAddress,
    ) -> Result<ReplicationStream, CallError> {
        // One request is in flight at a time; the slot to spare lets a request be queued
        // without waiting for hyper to take the one before.
        let (requests, queued) = mpsc::channel(2);
        let answers = peers
            .client(&peer.url)?
            .replicate(peers.request(peer, ReceiverStream::new(queued)))
            .await
            .map_err(|status| CallError::from_status(&peer.url, &status))?
            .into_inner();
        Ok(ReplicationStream {
            url: peer.url.clone(),
            requests,
            answers,
        })
    }

    /// Sends `request` and waits for its answer. After an error, or if the caller stops waiting,
    /// the stream must be dropped: the answer to this request may still come, and would be taken
    /// for the next one's.
    pub(crate) async fn exchange(
        &mut self,
        request: PeerMessage,
    ) -> Result<PeerMessage, CallError> {
        let closed = |reason: &str| CallError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| closed("the replication stream closed"))?;
        match self.answers.message().await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(closed("the peer ended the replication stream")),
            Err(status) => Err(CallError::from_status(&self.url, &status)),
        }
    }
}

/// Serves a `Replicate` stream: answers each request in turn with `answer`, until the requests
/// end, one fails, or `stopped` turns true. Ending on `stopped` lets a server shut down
/// gracefully: it waits for its open streams to end, and a leader never ends its own.
pub(crate) fn answer_each<F, A>(
    requests: Streaming<PeerMessage>,
    stopped: watch::Receiver<bool>,
    answer: F,
) -> Answers
where
    F: FnMut(PeerMessage) -> A + Send + 'static,
    A: Future<Output = Result<PeerMessage, Status>> + Send,
{
    Box::pin(futures_util::stream::unfold(
        Some((requests, stopped, answer)),
        |serving| async move {
            let (mut requests, mut stopped, mut answer) = serving?;
            let next = tokio::select! {
                next = requests.message() => next,
                _ = stopped.wait_for(|stop| *stop) => return None,
            };
            let answered = match next {
                Ok(Some(request)) => answer(request).await,
                Ok(None) => return None,
                Err(status) => Err(status),
            };
            // A request that cannot be read or answered ends the stream with its error.
            let serving = answered.is_ok().then_some((requests, stopped, answer));
            Some((answered, serving))
        },
    ))
}
