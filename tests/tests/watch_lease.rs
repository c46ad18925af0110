//! Watch and Lease on a three-member cluster of real processes: a watcher on a follower sees
//! every event in order through a leader's death, lease expiry deletes keys and tells watchers,
//! and a leader change does not cut a lease short.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use cairn_proto::mvccpb::event::EventType;
use cairn_tests::cluster::Cluster;
use tokio::sync::mpsc;
use tonic::transport::Channel;

async fn kv(cluster: &Cluster, i: usize) -> KvClient<Channel> {
    KvClient::connect(cluster.endpoint(i).to_string())
        .await
        .unwrap()
}

/// One event as a watcher saw it: (revision, type, key).
type Seen = (i64, i32, String);

/// Watches `prefix` on `endpoint` from `start_revision`, forwarding every event. When the stream
/// breaks it reconnects and resumes from the revision after the last event it forwarded, as a
/// client library does; it stops once the receiver is gone.
async fn watch_prefix(
    endpoint: String,
    prefix: &str,
    start_revision: i64,
    events: mpsc::UnboundedSender<Seen>,
) {
    let mut next = start_revision;
    loop {
        let Ok(mut client) = WatchClient::connect(endpoint.clone()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.into(),
                range_end: end,
                start_revision: next,
                ..Default::default()
            })),
        };
        // The request stream stays open while we read: closing it would end the watch.
        let (requests, requests_rx) = mpsc::unbounded_channel();
        requests.send(create).unwrap();
        let Ok(response) = client
            .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(
                requests_rx,
            ))
            .await
        else {
            continue;
        };
        let mut stream = response.into_inner();
        while let Ok(Some(response)) = stream.message().await {
            assert!(!response.canceled, "watch cancelled: {response:?}");
            for event in response.events {
                let kv = event.kv.unwrap();
                next = kv.mod_revision + 1;
                let seen = (
                    kv.mod_revision,
                    event.r#type,
                    String::from_utf8(kv.key).unwrap(),
                );
                if events.send(seen).is_err() {
                    return;
                }
            }
        }
        drop(requests);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_watcher_sees_every_write_in_order_through_a_leader_kill() {
    const WRITES: usize = 10_000;
    const WRITERS: usize = 16;
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let watched = followers[0];
    let start = cluster
        .status(watched)
        .await
        .unwrap()
        .header
        .unwrap()
        .revision
        + 1;

    let (events, mut seen) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch_prefix(
        cluster.endpoint(watched).to_string(),
        "w/",
        start,
        events,
    ));

    // Writers go through the followers, which outlive the leader; a write whose outcome is
    // unknown is retried, so a key may be written twice, and the watcher must report both.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = kv(&cluster, followers[w % 2]).await;
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for n in (w..WRITES).step_by(WRITERS) {
                let request = PutRequest {
                    key: format!("w/{n:05}").into(),
                    value: b"v".to_vec(),
                    ..Default::default()
                };
                while client.put(request.clone()).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while acknowledged.load(Ordering::Relaxed) < WRITES / 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(leader);
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(120), writer)
            .await
            .expect("writes resume after the leader is killed")
            .unwrap();
    }

    // Everything acknowledged is in history; the watcher must have reported exactly history.
    let mut client = kv(&cluster, watched).await;
    let last = client
        .range(RangeRequest {
            key: b"w/".to_vec(),
            range_end: b"w0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    let mut received: Vec<Seen> = Vec::new();
    while received
        .last()
        .is_none_or(|(revision, _, _)| *revision < last)
    {
        let event = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("the watcher keeps receiving")
            .expect("the watcher runs");
        received.push(event);
    }
    watcher.abort();

    assert!(
        received.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "one event per revision, in revision order, no duplicates"
    );
    assert!(
        received
            .iter()
            .all(|(_, kind, _)| *kind == EventType::Put as i32)
    );
    let keys: BTreeSet<&str> = received.iter().map(|(_, _, key)| key.as_str()).collect();
    assert_eq!(keys.len(), WRITES, "every write was seen");
    let revisions: Vec<i64> = received.iter().map(|(revision, _, _)| *revision).collect();
    let expected: Vec<i64> = (start..=last).collect();
    assert_eq!(revisions, expected, "no revision was skipped");

    cluster.restart(leader).await.unwrap();
    cluster.converged().await.unwrap();
}

/// Waits until `key` is gone on member `i`; returns how long that took.
async fn time_until_deleted(cluster: &Cluster, i: usize, key: &str) -> Duration {
    let start = Instant::now();
    let mut client = kv(cluster, i).await;
    loop {
        let response = client
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if response.kvs.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{key} never went"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn grant(cluster: &Cluster, i: usize, ttl: i64) -> i64 {
    let mut leases = LeaseClient::connect(cluster.endpoint(i).to_string())
        .await
        .unwrap();
    let granted = leases
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.ttl, ttl);
    granted.id
}

async fn put_with_lease(cluster: &Cluster, i: usize, key: &str, lease: i64) -> i64 {
    kv(cluster, i)
        .await
        .put(PutRequest {
            key: key.into(),
            value: b"held".to_vec(),
            lease,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_keep_alive_client_loses_its_keys_within_the_ttl() {
    const TTL: i64 = 3;
    let cluster = Cluster::start(3, &[]).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let other = (0..3).find(|i| *i != leader && *i != follower).unwrap();

    let lease = grant(&cluster, follower, TTL).await;
    let revision = put_with_lease(&cluster, follower, "session/key", lease).await;
    let (events, mut seen) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch_prefix(
        cluster.endpoint(other).to_string(),
        "session/",
        revision,
        events,
    ));

    // etcdctl keeps the lease alive through a follower, which passes renewals to the leader.
    let mut keeper = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", cluster.endpoint(follower)])
        .args(["lease", "keep-alive", &format!("{lease:x}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl runs");
    tokio::time::sleep(Duration::from_secs(3 * TTL as u64)).await;
    let mut client = kv(&cluster, other).await;
    let held = client
        .range(RangeRequest {
            key: b"session/key".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        held.kvs.len(),
        1,
        "kept alive for three TTLs, the key stays"
    );

    keeper.kill().unwrap();
    keeper.wait().unwrap();
    let gone_after = time_until_deleted(&cluster, other, "session/key").await;
    eprintln!("key deleted {gone_after:?} after its keep-alive client died (TTL {TTL} s)");
    assert!(
        gone_after <= Duration::from_secs(TTL as u64 + 1),
        "deleted {gone_after:?} after the client died"
    );

    let put = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(put, (revision, EventType::Put as i32, "session/key".into()));
    let (delete_revision, kind, key) = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kind, key.as_str()),
        (EventType::Delete as i32, "session/key")
    );
    assert!(delete_revision > revision);
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_change_does_not_expire_a_lease_early() {
    const TTL: i64 = 6;
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let lease = grant(&cluster, follower, TTL).await;
    let granted_at = Instant::now();
    put_with_lease(&cluster, follower, "held", lease).await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(leader);
    cluster.leader().await.unwrap();
    // The new leader gives the lease its full TTL from when it took over: the key outlives its
    // first deadline, and then goes.
    time_until_deleted(&cluster, follower, "held").await;
    let lived = granted_at.elapsed();
    eprintln!("lease lived {lived:?} (TTL {TTL} s, leader killed at 2 s)");
    assert!(
        lived >= Duration::from_secs(TTL as u64),
        "expired early, after {lived:?}"
    );
    assert!(
        lived < Duration::from_secs(3 * TTL as u64),
        "never expired: {lived:?}"
    );
}
