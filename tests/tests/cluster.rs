//! Replication with real processes on loopback: bootstrap, failover under load, restart and
//! catch-up, membership changes, and catch-up by snapshot once the log is purged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MoveLeaderRequest, PutRequest, RangeRequest,
};
use cairn_tests::cluster::Cluster;
use cairn_tests::eventually;
use tokio::sync::Mutex;
use tonic::transport::Channel;

async fn kv(cluster: &Cluster, i: usize) -> KvClient<Channel> {
    KvClient::connect(cluster.endpoint(i).to_string())
        .await
        .unwrap()
}

async fn members(cluster: &Cluster, i: usize) -> ClusterClient<Channel> {
    ClusterClient::connect(cluster.endpoint(i).to_string())
        .await
        .unwrap()
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> Result<i64, tonic::Status> {
    let response = kv
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().header.unwrap().revision)
}

/// `key`'s (value, mod_revision) as member `kv` sees it, linearizably or not.
async fn get(kv: &mut KvClient<Channel>, key: &str, serializable: bool) -> Option<(String, i64)> {
    let response = kv
        .range(RangeRequest {
            key: key.into(),
            serializable,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    response.kvs.first().map(|kv| {
        (
            String::from_utf8(kv.value.clone()).unwrap(),
            kv.mod_revision,
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn three_and_five_members_bootstrap_and_serve_from_every_member() {
    for size in [3, 5] {
        let cluster = Cluster::start(size, &[]).await.unwrap();

        // Every member publishes its name and client URL through the log.
        eventually("every member is published", async || {
            let list = members(&cluster, 0)
                .await
                .member_list(MemberListRequest::default())
                .await
                .unwrap()
                .into_inner();
            list.members.len() == size
                && list.members.iter().all(|m| {
                    cluster
                        .specs
                        .iter()
                        .any(|s| s.name == m.name && m.client_urls == [s.client_url.clone()])
                })
        })
        .await;

        // A write through any member is seen, linearizably, by every member.
        for writer in 0..size {
            let key = format!("from/{writer}");
            let revision = put(&mut kv(&cluster, writer).await, &key, "v")
                .await
                .unwrap();
            for reader in 0..size {
                let seen = get(&mut kv(&cluster, reader).await, &key, false).await;
                assert_eq!(
                    seen,
                    Some(("v".into(), revision)),
                    "member {reader} reads {key}"
                );
            }
        }

        let headers: Vec<_> = {
            let mut headers = Vec::new();
            for i in 0..size {
                headers.push(cluster.status(i).await.unwrap().header.unwrap());
            }
            headers
        };
        assert!(
            headers
                .iter()
                .all(|h| h.cluster_id == headers[0].cluster_id)
        );
        let ids: std::collections::BTreeSet<_> = headers.iter().map(|h| h.member_id).collect();
        assert_eq!(ids.len(), size, "member IDs are distinct");
        assert!(headers.iter().all(|h| h.raft_term > 0));
        cluster.converged().await.unwrap();

        // MoveLeader hands leadership to the member asked for, and only the leader takes it.
        let leader = cluster.leader().await.unwrap();
        let target = (leader + 1) % size;
        let target_id = headers[target].member_id;
        let not_leader = cluster
            .maintenance(target)
            .await
            .unwrap()
            .move_leader(MoveLeaderRequest { target_id })
            .await
            .unwrap_err();
        assert_eq!(
            not_leader.code(),
            tonic::Code::FailedPrecondition,
            "{not_leader:?}"
        );
        cluster
            .maintenance(leader)
            .await
            .unwrap()
            .move_leader(MoveLeaderRequest { target_id })
            .await
            .unwrap();
        assert_eq!(cluster.leader().await.unwrap(), target);
        put(&mut kv(&cluster, leader).await, "after/move", "v")
            .await
            .unwrap();
    }
}

/// An acknowledged put: the key, its revision, and when it was sent and answered.
struct Ack {
    key: String,
    revision: i64,
    sent_at: Instant,
    acked_at: Instant,
}

/// Writers that spread unique puts over the running members and log every acknowledgement.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Ack>>>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &Cluster, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let endpoints: Vec<String> = (0..cluster.size())
            .map(|i| cluster.endpoint(i).to_string())
            .collect();
        let writers = (0..clients)
            .map(|client| {
                let (stop, acknowledged, endpoints) =
                    (stop.clone(), acknowledged.clone(), endpoints.clone());
                tokio::spawn(async move {
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        // Each write goes to the next member in turn; a dead member just fails.
                        let endpoint = &endpoints[(client + i) % endpoints.len()];
                        let Ok(mut kv) = KvClient::connect(endpoint.clone()).await else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        let key = format!("load/{client}/{i}");
                        let sent_at = Instant::now();
                        let written =
                            tokio::time::timeout(Duration::from_secs(10), put(&mut kv, &key, &key))
                                .await;
                        if let Ok(Ok(revision)) = written {
                            let acked_at = Instant::now();
                            acknowledged.lock().await.push(Ack {
                                key,
                                revision,
                                sent_at,
                                acked_at,
                            });
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acknowledged,
            writers,
        }
    }

    async fn acknowledged_count(&self) -> usize {
        self.acknowledged.lock().await.len()
    }

    async fn stop(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers {
            writer.await.unwrap();
        }
        std::mem::take(&mut *self.acknowledged.lock().await)
    }
}

/// Every acknowledged write is on member `i` at the revision it was acknowledged with.
async fn assert_all_present(cluster: &Cluster, i: usize, acknowledged: &[Ack]) {
    let mut kv = kv(cluster, i).await;
    let everything = kv
        .range(RangeRequest {
            key: b"load/".to_vec(),
            range_end: b"load0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let found: BTreeMap<Vec<u8>, i64> = everything
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect();
    for ack in acknowledged {
        assert_eq!(
            found.get(ack.key.as_bytes()),
            Some(&ack.revision),
            "member {i}: acknowledged {} at revision {}",
            ack.key,
            ack.revision
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_serves_its_own_writes_to_serializable_reads_at_once() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let mut kv = kv(&cluster, follower).await;
    // As in etcd, a write a member acknowledges is applied there before the answer, so a read
    // of that member's own state that follows it sees it.
    for i in 0..300 {
        let value = i.to_string();
        let revision = put(&mut kv, "read-your-writes", &value).await.unwrap();
        assert_eq!(
            get(&mut kv, "read-your-writes", true).await,
            Some((value, revision)),
            "write {i} was acknowledged before the member that took it applied it"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    let load = Load::start(&cluster, 8);
    eventually("the load is under way", async || {
        load.acknowledged_count().await > 200
    })
    .await;

    let leader = cluster.leader().await.unwrap();
    let killed_at = Instant::now();
    cluster.kill(leader);
    let new_leader = cluster.leader().await.unwrap();
    assert_ne!(new_leader, leader);
    let before = load.acknowledged_count().await;
    eventually("writes resume", async || {
        load.acknowledged_count().await > before + 200
    })
    .await;
    let acknowledged = load.stop().await;

    // How long after the leader's death the first write sent after it was acknowledged.
    let resumed = acknowledged
        .iter()
        .filter(|ack| ack.sent_at > killed_at)
        .map(|ack| ack.acked_at)
        .min()
        .unwrap();
    println!(
        "{} writes acknowledged; the first write sent after the leader's death was acknowledged \
         {:?} after it",
        acknowledged.len(),
        resumed - killed_at
    );

    for i in cluster.running() {
        assert_all_present(&cluster, i, &acknowledged).await;
    }

    // The killed member comes back, catches up, and holds what the others hold.
    cluster.restart(leader).await.unwrap();
    let (_, revision) = cluster.converged().await.unwrap();
    let newest = acknowledged.iter().map(|ack| ack.revision).max().unwrap();
    assert!(revision >= newest);
    assert_all_present(&cluster, leader, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_learner_is_added_promoted_and_a_member_removed() {
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    for i in 0..50 {
        put(&mut kv(&cluster, 0).await, &format!("before/{i}"), "x")
            .await
            .unwrap();
    }

    let joining = cluster.plan_member();
    let added = members(&cluster, 1)
        .await
        .member_add(MemberAddRequest {
            peer_urls: vec![cluster.specs[joining].peer_url.clone()],
            is_learner: true,
        })
        .await
        .unwrap()
        .into_inner();
    let learner = added.member.unwrap();
    assert!(learner.is_learner);
    assert_eq!(added.members.len(), 4);
    cluster.join(joining).await.unwrap();

    // A learner replicates but does not vote.
    eventually("the learner has caught up", async || {
        cluster.hash_kv(joining).await.ok() == cluster.hash_kv(0).await.ok()
    })
    .await;
    assert!(cluster.status(joining).await.unwrap().is_learner);

    let mut promoted = None;
    eventually("the learner is promoted", async || {
        promoted = members(&cluster, 2)
            .await
            .member_promote(MemberPromoteRequest { id: learner.id })
            .await
            .ok();
        promoted.is_some()
    })
    .await;
    let promoted = promoted.unwrap().into_inner();
    assert!(promoted.members.iter().all(|m| !m.is_learner));
    assert!(!cluster.status(joining).await.unwrap().is_learner);

    // Promoting a voter is refused, as etcd refuses it.
    let refused = members(&cluster, 0)
        .await
        .member_promote(MemberPromoteRequest { id: learner.id })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // Remove a member that is not the leader; the other three carry on.
    let leader = cluster.leader().await.unwrap();
    let removed = (0..3).find(|&i| i != leader).unwrap();
    let removed_id = cluster.member_id(removed).await.unwrap();
    let left = members(&cluster, leader)
        .await
        .member_remove(MemberRemoveRequest { id: removed_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.members.len(), 3);
    assert!(left.members.iter().all(|m| m.id != removed_id));
    cluster.kill(removed);

    let missing = members(&cluster, leader)
        .await
        .member_remove(MemberRemoveRequest { id: removed_id })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

    for i in cluster.running() {
        put(&mut kv(&cluster, i).await, &format!("after/{i}"), "y")
            .await
            .unwrap();
    }
    cluster.converged().await.unwrap();
    let seen = get(&mut kv(&cluster, joining).await, "before/49", false).await;
    assert_eq!(seen.map(|(value, _)| value), Some("x".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_behind_a_purged_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(
        3,
        &[
            "--snapshot-count",
            "100",
            "--snapshot-catchup-entries",
            "20",
        ],
    )
    .await
    .unwrap();
    let leader = cluster.leader().await.unwrap();
    let behind = (leader + 1) % 3;
    cluster.kill(behind);

    let mut kv_leader = kv(&cluster, leader).await;
    for i in 0..600 {
        put(&mut kv_leader, &format!("k/{i:04}"), &i.to_string())
            .await
            .unwrap();
    }

    cluster.restart(behind).await.unwrap();
    cluster.converged().await.unwrap();
    assert!(
        cluster.log_text(behind).contains("installed a snapshot"),
        "member {behind} caught up without a snapshot; log:\n{}",
        cluster.log_text(behind)
    );
    let seen = get(&mut kv(&cluster, behind).await, "k/0599", true).await;
    assert_eq!(seen.map(|(value, _)| value), Some("599".to_string()));

    // It goes on replicating normally after the snapshot.
    put(&mut kv_leader, "after", "snapshot").await.unwrap();
    cluster.converged().await.unwrap();
}
