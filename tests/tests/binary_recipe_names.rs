//! etcd's v3lock and v3election services take names and values as bytes, not text: a lock
//! (held, waited for, released) and an election whose names, and a leader whose values, are not
//! UTF-8 work end to end through the bundled plugins, on one member.

use std::time::Duration;

use cairn_client::Client;
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use cairn_tests::cluster::Cluster;
use tonic::Code;

const NAME: &[u8] = b"binary/\xff\x00name";

fn under_name(key: &[u8]) -> bool {
    key.strip_prefix(NAME)
        .is_some_and(|rest| rest.starts_with(b"/"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_named_with_bytes_that_are_not_utf8_is_held_and_released() {
    let cluster = Cluster::start(1, &[]).await.unwrap();
    let client = Client::connect(cluster.endpoint(0)).await.unwrap();
    let session = client.session(30).await.unwrap();
    let mut locks = LockClient::new(client.channel().clone());
    let lock = LockRequest {
        name: NAME.to_vec(),
        lease: session.lease(),
    };
    let held = locks.lock(lock.clone()).await.unwrap().into_inner();
    assert!(under_name(&held.key), "{:?}", held.key);
    // A second contender waits in the line behind the holder's key, and holds once it goes.
    let other = client.session(30).await.unwrap();
    let mut waiting_locks = locks.clone();
    let waiting = tokio::spawn(async move {
        let request = LockRequest {
            name: NAME.to_vec(),
            lease: other.lease(),
        };
        let held = waiting_locks.lock(request).await.unwrap().into_inner();
        (held, other)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "held the lock while another did");
    locks
        .unlock(UnlockRequest {
            key: held.key.clone(),
        })
        .await
        .unwrap();
    let (next, other) = waiting.await.unwrap();
    assert!(under_name(&next.key), "{:?}", next.key);
    assert_ne!(next.key, held.key);
    locks.unlock(UnlockRequest { key: next.key }).await.unwrap();
    drop(other);
    // Released: the first lease takes it again at a newer revision.
    let again = locks.lock(lock).await.unwrap().into_inner();
    assert_eq!(again.key, held.key);
    assert!(again.header.unwrap().revision > held.header.unwrap().revision);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_election_named_with_bytes_that_are_not_utf8_proclaims_values_that_are_not_either() {
    let cluster = Cluster::start(1, &[]).await.unwrap();
    let client = Client::connect(cluster.endpoint(0)).await.unwrap();
    let session = client.session(30).await.unwrap();
    let mut elections = ElectionClient::new(client.channel().clone());
    let leader_value = async |elections: &mut ElectionClient<_>| {
        elections
            .leader(LeaderRequest {
                name: NAME.to_vec(),
            })
            .await
            .map(|response| response.into_inner().kv.unwrap().value)
    };

    let campaign = elections
        .campaign(CampaignRequest {
            name: NAME.to_vec(),
            lease: session.lease(),
            value: b"\x80first".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let leadership = campaign.leader.unwrap();
    assert!(under_name(&leadership.key), "{:?}", leadership.key);
    assert_eq!(leader_value(&mut elections).await.unwrap(), b"\x80first");

    elections
        .proclaim(ProclaimRequest {
            leader: Some(leadership.clone()),
            value: b"\xfe\xff".to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(leader_value(&mut elections).await.unwrap(), b"\xfe\xff");

    elections
        .resign(ResignRequest {
            leader: Some(leadership),
        })
        .await
        .unwrap();
    let after = leader_value(&mut elections).await.unwrap_err();
    assert_eq!(after.code(), Code::NotFound, "{after}");
}
