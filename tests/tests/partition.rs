//! A network partition between peers, made by a fault-injecting proxy: the isolated leader stops
//! leading, the majority elects a leader and serves, the minority serves no linearizable read
//! or write, and after healing every member holds the same state.

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_tests::cluster::Cluster;
use cairn_tests::eventually;
use cairn_tests::proxy::PeerProxies;
use tonic::transport::Channel;

async fn kv(cluster: &Cluster, i: usize) -> KvClient<Channel> {
    KvClient::connect(cluster.endpoint(i).to_string())
        .await
        .unwrap()
}

async fn put(cluster: &Cluster, i: usize, key: &str) -> Result<i64, tonic::Status> {
    let response = kv(cluster, i)
        .await
        .put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().header.unwrap().revision)
}

async fn read(
    cluster: &Cluster,
    i: usize,
    key: &str,
    serializable: bool,
) -> Result<usize, tonic::Status> {
    let response = kv(cluster, i)
        .await
        .range(RangeRequest {
            key: key.into(),
            serializable,
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().kvs.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_leader_steps_aside_and_the_majority_serves() {
    let proxies = PeerProxies::default();
    let cluster = Cluster::start_with_peer_urls(3, &[], async |i, listen_url| {
        let upstream = listen_url.strip_prefix("http://").unwrap().to_string();
        proxies.add(i, upstream).await.unwrap()
    })
    .await
    .unwrap();
    put(&cluster, 0, "before").await.unwrap();

    let old_leader = cluster.leader().await.unwrap();
    let majority: Vec<usize> = (0..3).filter(|&i| i != old_leader).collect();
    let old_leader_id = cluster.member_id(old_leader).await.unwrap();
    proxies.isolate(old_leader, cluster.pid(old_leader).unwrap());

    eventually("the majority elects a new leader", async || {
        let mut leaders = Vec::new();
        for &i in &majority {
            leaders.push(cluster.status(i).await.map(|s| s.leader).unwrap_or(0));
        }
        leaders[0] != 0 && leaders[0] != old_leader_id && leaders[0] == leaders[1]
    })
    .await;
    eventually(
        "the isolated leader stops naming itself leader",
        async || cluster.status(old_leader).await.unwrap().leader != old_leader_id,
    )
    .await;

    // The majority serves writes and linearizable reads, through either of its members.
    for &i in &majority {
        put(&cluster, i, &format!("majority/{i}")).await.unwrap();
        assert_eq!(read(&cluster, i, "before", false).await.unwrap(), 1);
    }

    // The minority serves neither; a serializable read still answers, from its stale state.
    let refused = put(&cluster, old_leader, "minority").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let refused = read(&cluster, old_leader, "before", false)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(read(&cluster, old_leader, "before", true).await.unwrap(), 1);
    assert_eq!(
        read(&cluster, old_leader, "majority/0", true)
            .await
            .unwrap(),
        0
    );

    proxies.heal();
    let (_, revision) = cluster.converged().await.unwrap();
    let leader = cluster.leader().await.unwrap();
    assert_ne!(leader, old_leader, "a member with a stale log cannot win");
    for i in 0..3 {
        for &writer in &majority {
            assert_eq!(
                read(&cluster, i, &format!("majority/{writer}"), false)
                    .await
                    .unwrap(),
                1
            );
        }
        assert_eq!(
            read(&cluster, i, "minority", false).await.unwrap(),
            0,
            "a write the minority refused appeared on member {i}"
        );
    }
    assert!(revision >= 4);
}
