//! etcd's Watch service, served by every member from its own apply path.
//!
//! Each gRPC stream is one task that owns the stream's watchers. It hears of every apply through
//! [`cairn_raft::Replica::subscribe`] and hands each watcher the events of its keys. A watcher is
//! a cursor: `next_revision` is the first revision it has not been told about, so it never misses
//! or repeats an event however it learns of them. Whenever the in-memory announcements do not
//! reach back far enough (a start revision in the past, a snapshot install, a stream too slow to
//! keep up with the announcements), the watcher reads history from the kernel instead, a page at
//! a time. Writes never wait for watchers: announcements go out on a bounded broadcast channel
//! that a slow stream simply falls behind on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_kernel::{Event, EventKind, History, KeyRange, Revision};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::mvccpb;
use cairn_raft::AppliedEvents;
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::node::SharedNode;

/// Responses a stream buffers for its client before its task waits (and falls behind on
/// announcements, to catch up from history later).
const OUTBOUND_BUFFERED: usize = 128;
/// Events read from history at a time, under the kernel's read lock.
const HISTORY_PAGE_EVENTS: usize = 1_000;
/// etcd's watch id for responses that belong to no watcher (progress answers, refusals).
const NO_WATCHER: i64 = -1;

#[derive(Clone, Copy, Debug)]
pub struct WatchSettings {
    /// How often a watcher that asked for progress notifications and heard nothing is told the
    /// revision it is up to date with.
    pub progress_notify_interval: Duration,
    /// Largest response a fragmenting watcher is sent; larger ones are split.
    pub fragment_bytes: usize,
}

pub struct WatchService {
    node: SharedNode,
    settings: WatchSettings,
}

impl WatchService {
    pub fn new(node: SharedNode, settings: WatchSettings) -> WatchService {
        WatchService { node, settings }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (out, responses) = mpsc::channel(OUTBOUND_BUFFERED);
        // Subscribe before reading the revision: every apply after it is announced to us.
        let applied = self.node.replica.subscribe();
        let synced_revision = self.node.replica.kernel().read().await.revision();
        let session = Session {
            node: self.node.clone(),
            settings: self.settings,
            out,
            applied,
            synced_revision,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}

/// One watcher of a stream.
struct Watcher {
    range: KeyRange,
    /// The first revision whose events this watcher has not been given.
    next_revision: Revision,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    /// Whether it was sent anything since the last progress notification round.
    heard_recently: bool,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        event.revision() >= self.next_revision
            && self.range.contains(&event.kv.key)
            && match event.kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            }
    }

    fn select(&self, events: &[Event]) -> Vec<mvccpb::Event> {
        events
            .iter()
            .filter(|event| self.wants(event))
            .map(|event| convert::event(event, self.prev_kv))
            .collect()
    }
}

/// The client has gone: the stream's task ends.
struct Gone;

/// A watch stream's task and everything it owns.
struct Session {
    node: SharedNode,
    settings: WatchSettings,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    applied: broadcast::Receiver<Arc<AppliedEvents>>,
    /// The newest revision this stream has handled the announcement of.
    synced_revision: Revision,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
}

impl Session {
    async fn run(mut self, mut requests: Streaming<pb::WatchRequest>) {
        let mut progress = tokio::time::interval(self.settings.progress_notify_interval);
        progress.reset();
        // As in etcd, a client that closes its side still gets events until it goes.
        let mut requests_open = true;
        loop {
            let step = tokio::select! {
                request = requests.next(), if requests_open => match request {
                    Some(Ok(request)) => self.handle(request).await,
                    None => {
                        requests_open = false;
                        Ok(())
                    }
                    Some(Err(_)) => Err(Gone),
                },
                applied = self.applied.recv() => match applied {
                    Ok(applied) => self.deliver(&applied).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "a watch stream fell behind; reading history");
                        self.catch_up_all().await
                    }
                    Err(broadcast::error::RecvError::Closed) => Err(Gone),
                },
                _ = progress.tick() => self.notify_progress().await,
                () = self.out.closed() => Err(Gone),
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn handle(&mut self, request: pb::WatchRequest) -> Result<(), Gone> {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_none() {
                    return Ok(());
                }
                let response = pb::WatchResponse {
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..self.response(self.synced_revision)
                };
                self.send(response).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // The answer promises every event up to its revision was sent: hand out what
                // has been announced first.
                self.drain_announcements().await?;
                let response = pb::WatchResponse {
                    watch_id: NO_WATCHER,
                    ..self.response(self.synced_revision)
                };
                self.send(response).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> Result<(), Gone> {
        let range = KeyRange::from_etcd(create.key, create.range_end);
        if let KeyRange::Interval { start, end } = &range
            && start >= end
        {
            return self.refuse_create("mvcc: watcher range is empty").await;
        }
        let id = match create.watch_id {
            0 => {
                while self.watchers.contains_key(&self.next_auto_id) {
                    self.next_auto_id += 1;
                }
                self.next_auto_id
            }
            id if self.watchers.contains_key(&id) => {
                return self
                    .refuse_create("mvcc: duplicate watch ID provided on the WatchStream")
                    .await;
            }
            id => id,
        };
        let current = self.node.replica.kernel().read().await.revision();
        use pb::watch_create_request::FilterType;
        let filters = |wanted: FilterType| create.filters.contains(&(wanted as i32));
        let watcher = Watcher {
            range,
            next_revision: if create.start_revision > 0 {
                create.start_revision
            } else {
                current + 1
            },
            prev_kv: create.prev_kv,
            no_put: filters(FilterType::Noput),
            no_delete: filters(FilterType::Nodelete),
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            heard_recently: false,
        };
        let replay = watcher.next_revision <= current;
        self.watchers.insert(id, watcher);
        let response = pb::WatchResponse {
            watch_id: id,
            created: true,
            ..self.response(current)
        };
        self.send(response).await?;
        if replay {
            self.catch_up(id).await?;
        }
        Ok(())
    }

    /// etcd's answer to a watch it cannot create: created and cancelled at once, with no id.
    async fn refuse_create(&self, reason: &str) -> Result<(), Gone> {
        let response = pb::WatchResponse {
            watch_id: NO_WATCHER,
            created: true,
            canceled: true,
            cancel_reason: reason.into(),
            ..self.response(self.synced_revision)
        };
        self.send(response).await
    }

    /// Hands out the events of one apply, and sends watchers that missed earlier ones to
    /// history.
    async fn deliver(&mut self, applied: &AppliedEvents) -> Result<(), Gone> {
        self.synced_revision = self.synced_revision.max(applied.revision);
        let mut behind = Vec::new();
        let mut responses = Vec::new();
        for (id, watcher) in &mut self.watchers {
            if watcher.next_revision > applied.revision {
                continue;
            }
            if watcher.next_revision < applied.first_revision {
                behind.push(*id);
                continue;
            }
            let events = watcher.select(&applied.events);
            watcher.next_revision = applied.revision + 1;
            if !events.is_empty() {
                watcher.heard_recently = true;
                responses.push((*id, watcher.fragment, events));
            }
        }
        for (id, fragment, events) in responses {
            self.send_events(id, fragment, events, applied.revision)
                .await?;
        }
        for id in behind {
            self.catch_up(id).await?;
        }
        Ok(())
    }

    /// Handles every announcement already waiting, so `synced_revision` is as new as it can be.
    async fn drain_announcements(&mut self) -> Result<(), Gone> {
        loop {
            match self.applied.try_recv() {
                Ok(applied) => self.deliver(&applied).await?,
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.catch_up_all().await?,
                Err(broadcast::error::TryRecvError::Empty) => return Ok(()),
                Err(broadcast::error::TryRecvError::Closed) => return Err(Gone),
            }
        }
    }

    async fn catch_up_all(&mut self) -> Result<(), Gone> {
        self.synced_revision = self
            .synced_revision
            .max(self.node.replica.kernel().read().await.revision());
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.catch_up(id).await?;
        }
        Ok(())
    }

    /// Reads the watcher's events from history, a page at a time, until it has all of them. A
    /// watcher whose next revision has been compacted is told so and cancelled, as in etcd.
    async fn catch_up(&mut self, id: i64) -> Result<(), Gone> {
        loop {
            let Some(watcher) = self.watchers.get(&id) else {
                return Ok(());
            };
            let from = watcher.next_revision;
            let (history, revision) = {
                let kernel = self.node.replica.kernel().read().await;
                match kernel.history_events(from, HISTORY_PAGE_EVENTS) {
                    Ok(history) => (history, kernel.revision()),
                    Err(error) => {
                        tracing::error!(%error, "reading history for a watcher");
                        let _ = self
                            .out
                            .send(Err(Status::internal(format!("reading history: {error}"))))
                            .await;
                        return Err(Gone);
                    }
                }
            };
            let events = match history {
                History::Compacted(compact_revision) => {
                    self.watchers.remove(&id);
                    let response = pb::WatchResponse {
                        watch_id: id,
                        canceled: true,
                        compact_revision,
                        ..self.response(revision)
                    };
                    return self.send(response).await;
                }
                History::Events(events) => events,
            };
            let Some(last) = events.last().map(Event::revision) else {
                return Ok(());
            };
            let watcher = self.watchers.get_mut(&id).expect("watcher checked above");
            let selected = watcher.select(&events);
            watcher.next_revision = last + 1;
            let fragment = watcher.fragment;
            if !selected.is_empty() {
                watcher.heard_recently = true;
                self.send_events(id, fragment, selected, last).await?;
            }
        }
    }

    /// Tells each idle watcher that asked for it which revision it is up to date with.
    async fn notify_progress(&mut self) -> Result<(), Gone> {
        let synced = self.synced_revision;
        let due: Vec<i64> = self
            .watchers
            .iter_mut()
            .filter_map(|(id, watcher)| {
                let heard = std::mem::take(&mut watcher.heard_recently);
                (watcher.progress_notify && !heard && watcher.next_revision > synced).then_some(*id)
            })
            .collect();
        for id in due {
            let response = pb::WatchResponse {
                watch_id: id,
                ..self.response(synced)
            };
            self.send(response).await?;
        }
        Ok(())
    }

    /// Sends `events` to watcher `id`; for a watcher that asked for fragments, in pieces no
    /// larger than the request size limit, all but the last marked as fragments.
    async fn send_events(
        &self,
        id: i64,
        fragment: bool,
        events: Vec<mvccpb::Event>,
        revision: Revision,
    ) -> Result<(), Gone> {
        let pieces = if fragment {
            split(events, self.settings.fragment_bytes)
        } else {
            vec![events]
        };
        let count = pieces.len();
        for (n, events) in pieces.into_iter().enumerate() {
            let response = pb::WatchResponse {
                watch_id: id,
                fragment: n + 1 < count,
                events,
                ..self.response(revision)
            };
            self.send(response).await?;
        }
        Ok(())
    }

    fn response(&self, revision: Revision) -> pb::WatchResponse {
        pb::WatchResponse {
            header: self.node.header(revision),
            ..Default::default()
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(response)).await.map_err(|_| Gone)
    }
}

/// Splits `events` into runs of at most `limit` encoded bytes each (a larger event goes alone).
fn split(events: Vec<mvccpb::Event>, limit: usize) -> Vec<Vec<mvccpb::Event>> {
    let mut pieces: Vec<Vec<mvccpb::Event>> = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0;
    for event in events {
        let bytes = event.encoded_len();
        if !current.is_empty() && current_bytes + bytes > limit {
            pieces.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += bytes;
        current.push(event);
    }
    pieces.push(current);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: b"k".to_vec(),
                value: vec![b'v'; value_len],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fragments_keep_every_event_in_order_and_respect_the_limit() {
        let events: Vec<_> = (1..=10).map(|n| event(n * 100)).collect();
        let limit = 1_200;
        let pieces = split(events.clone(), limit);
        assert!(pieces.len() > 1);
        assert_eq!(pieces.concat(), events);
        for piece in &pieces {
            let bytes: usize = piece.iter().map(Message::encoded_len).sum();
            assert!(piece.len() == 1 || bytes <= limit, "{bytes} bytes");
        }
        assert_eq!(split(Vec::new(), limit), vec![Vec::new()]);
    }
}
