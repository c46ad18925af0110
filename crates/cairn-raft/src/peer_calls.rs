//! Calls between members, many at once over one long-lived stream per peer.
//!
//! A follower passes writes and ReadIndex requests to the leader several at a time, each
//! answered when its entry commits or its round ends. As with replication (`peer_stream`), a
//! call on an open stream is a single DATA frame instead of an HTTP/2 stream of its own; here
//! the calls share the stream at once, and each answer carries its call's number. A call the
//! peer cannot take, such as one it cannot read, is answered with why and fails alone; only a
//! broken stream fails every call waiting on it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_proto::cairn_v1::PeerCallMessage;
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

use crate::network::{CallError, PeerAddress, Peers};

/// The answers of a `Calls` stream, as the peer service returns them.
pub(crate) type CallAnswers = Pin<Box<dyn Stream<Item = Result<PeerCallMessage, Status>> + Send>>;

/// This member's end of a `Calls` stream to one peer; callers share it.
pub(crate) struct CallStream {
    url: String,
    requests: mpsc::UnboundedSender<PeerCallMessage>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
}

/// The calls sent on a stream and not yet answered, by id; once the stream has ended, none.
struct Waiting {
    open: bool,
    answers: HashMap<u64, oneshot::Sender<Result<Vec<u8>, CallError>>>,
}

impl CallStream {
    /// Opens a stream to `peer`, over the connection this member shares with its URL.
    pub(crate) async fn open(peers: &Peers, peer: &PeerAddress) -> Result<CallStream, CallError> {
        let url = &peer.url;
        let (requests, queued) = mpsc::unbounded_channel();
        let answers = peers
            .client(url)?
            .calls(peers.request(peer, UnboundedReceiverStream::new(queued)))
            .await
            .map_err(|status| CallError::from_status(url, &status))?
            .into_inner();
        let waiting = Arc::new(Mutex::new(Waiting {
            open: true,
            answers: HashMap::new(),
        }));
        tokio::spawn(hand_out_answers(answers, waiting.clone(), url.to_string()));
        Ok(CallStream {
            url: url.to_string(),
            requests,
            waiting,
            next_id: AtomicU64::new(0),
        })
    }

    /// Whether calls can still be sent on this stream.
    pub(crate) fn is_open(&self) -> bool {
        lock(&self.waiting).open && !self.requests.is_closed()
    }

    /// Sends a call's `payload` and waits for its answer. A caller that stops waiting leaves the
    /// call to run on the peer; its answer is dropped when it comes.
    pub(crate) async fn call(&self, payload: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let ended = || CallError::Unreachable {
            url: self.url.clone(),
            reason: "the stream of calls to the peer ended".into(),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if !waiting.open {
                return Err(ended());
            }
            waiting.answers.insert(id, reply);
        }
        let forget = Forget {
            waiting: &self.waiting,
            id,
        };
        self.requests
            .send(PeerCallMessage {
                id,
                payload,
                ..PeerCallMessage::default()
            })
            .map_err(|_| ended())?;
        let answer = answer.await.unwrap_or_else(|_| Err(ended()));
        drop(forget);
        answer
    }
}

/// Takes a call out of the waiting ones when its caller is done with it, answered or not.
struct Forget<'a> {
    waiting: &'a Mutex<Waiting>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiting).answers.remove(&self.id);
    }
}

fn lock(waiting: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    waiting.lock().expect("waiting calls poisoned")
}

/// Hands each answer to its caller until the stream ends, then fails the calls still waiting:
/// the peer may or may not have acted on them.
async fn hand_out_answers(
    mut answers: Streaming<PeerCallMessage>,
    waiting: Arc<Mutex<Waiting>>,
    url: String,
) {
    let reason = loop {
        match answers.message().await {
            Ok(Some(answer)) => {
                if let Some(reply) = lock(&waiting).answers.remove(&answer.id) {
                    let _ = reply.send(if answer.error.is_empty() {
                        Ok(answer.payload)
                    } else if answer.refused {
                        Err(CallError::NotAccepted {
                            url: url.clone(),
                            reason: answer.error,
                        })
                    } else {
                        Err(CallError::Rejected {
                            url: url.clone(),
                            reason: answer.error,
                        })
                    });
                }
            }
            Ok(None) => break "the peer ended the stream of calls".to_string(),
            Err(status) => break status.to_string(),
        }
    };
    let mut waiting = lock(&waiting);
    waiting.open = false;
    for (_, reply) in waiting.answers.drain() {
        let _ = reply.send(Err(CallError::Unreachable {
            url: url.clone(),
            reason: reason.clone(),
        }));
    }
}

/// Serves a `Calls` stream: answers each call with `answer`, all of them at once, until the
/// calls end, the stream breaks, or `stopped` turns true; the stream ends once the calls
/// already taken are answered. A call `answer` fails is answered with its error, which tells the
/// caller the call was not acted on: `answer` must fail only before it acts, and fails with
/// FAILED_PRECONDITION only to refuse the caller itself. Ending on
/// `stopped` lets a server shut down gracefully: it waits for its open streams to end, and the
/// caller never ends its own.
pub(crate) fn answer_calls<F, A>(
    mut calls: Streaming<PeerCallMessage>,
    mut stopped: watch::Receiver<bool>,
    answer: F,
) -> CallAnswers
where
    F: Fn(Vec<u8>) -> A + Send + 'static,
    A: Future<Output = Result<Vec<u8>, Status>> + Send + 'static,
{
    let (answers, answered) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let call = tokio::select! {
                call = calls.message() => call,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            let call = match call {
                Ok(Some(call)) => call,
                Ok(None) => return,
                Err(status) => {
                    let _ = answers.send(Err(status));
                    return;
                }
            };
            let (answers, answering) = (answers.clone(), answer(call.payload));
            tokio::spawn(async move {
                let answer = match answering.await {
                    Ok(payload) => PeerCallMessage {
                        id: call.id,
                        payload,
                        ..PeerCallMessage::default()
                    },
                    Err(status) => PeerCallMessage {
                        id: call.id,
                        payload: Vec::new(),
                        error: format!("{:?}: {}", status.code(), status.message()),
                        refused: status.code() == tonic::Code::FailedPrecondition,
                    },
                };
                let _ = answers.send(Ok(answer));
            });
        }
    });
    Box::pin(UnboundedReceiverStream::new(answered))
}
