//! The etcd-client crate's lock and election APIs, unchanged, against a three-member cairn
//! cluster: they are served by the bundled lock and election plugins.

use std::time::Duration;

use cairn_tests::cluster::Cluster;
use etcd_client::{
    Client, Compare, CompareOp, LockOptions, ProclaimOptions, ResignOptions, Txn, TxnOp,
};

/// How long a test gives a request that should stay blocked to prove that it does.
const STAYS_BLOCKED: Duration = Duration::from_millis(500);

async fn client(cluster: &Cluster, i: usize) -> Client {
    Client::connect([cluster.endpoint(i)], None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_and_unlock_pass_the_lock_in_order_and_fence_writes() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    let mut first = client(&cluster, 0).await;
    let mut second = client(&cluster, 1).await;
    let first_lease = first.lease_grant(30, None).await.unwrap().id();
    let second_lease = second.lease_grant(30, None).await.unwrap().id();

    let held = first
        .lock("deploys", Some(LockOptions::new().with_lease(first_lease)))
        .await
        .unwrap();
    let first_key = held.key().to_vec();
    assert_eq!(first_key, format!("deploys/{first_lease:x}").into_bytes());
    // Locking again under the same lease is the same acquisition.
    let again = first
        .lock("deploys", Some(LockOptions::new().with_lease(first_lease)))
        .await
        .unwrap();
    assert_eq!(again.key(), first_key);

    let mut waiting = tokio::spawn(async move {
        let response = second
            .lock("deploys", Some(LockOptions::new().with_lease(second_lease)))
            .await
            .unwrap();
        (second, response.key().to_vec())
    });
    assert!(
        tokio::time::timeout(STAYS_BLOCKED, &mut waiting)
            .await
            .is_err(),
        "a second client locked a held lock"
    );

    // The holder's key fences a write: it goes through only while the key exists.
    let fenced = Txn::new()
        .when([Compare::version(first_key.clone(), CompareOp::Greater, 0)])
        .and_then([TxnOp::put("deploys-config", "v1", None)]);
    assert!(first.txn(fenced.clone()).await.unwrap().succeeded());

    first.unlock(first_key.clone()).await.unwrap();
    let (mut second, second_key) = waiting.await.unwrap();
    assert_eq!(second_key, format!("deploys/{second_lease:x}").into_bytes());
    assert!(
        !first.txn(fenced).await.unwrap().succeeded(),
        "a write fenced by a released lock went through"
    );
    let holder = second.get(second_key.clone(), None).await.unwrap();
    assert_eq!(holder.kvs()[0].lease(), second_lease);
    assert!(holder.kvs()[0].create_revision() > 0);

    // Revoking the holder's lease releases the lock.
    second.lease_revoke(second_lease).await.unwrap();
    let third_lease = first.lease_grant(30, None).await.unwrap().id();
    let third = tokio::time::timeout(
        Duration::from_secs(10),
        first.lock("deploys", Some(LockOptions::new().with_lease(third_lease))),
    )
    .await
    .expect("a revoked holder's lock is free")
    .unwrap();
    assert_eq!(third.key(), format!("deploys/{third_lease:x}").as_bytes());

    let error = first
        .lock("deploys", Some(LockOptions::new().with_lease(0x7777)))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("requested lease not found"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_whose_predecessor_leaves_the_line_still_waits_for_the_holder() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    let mut holder = client(&cluster, 0).await;
    let mut leaving = client(&cluster, 1).await;
    let mut last = client(&cluster, 2).await;
    let holder_lease = holder.lease_grant(30, None).await.unwrap().id();
    let leaving_lease = leaving.lease_grant(30, None).await.unwrap().id();
    let last_lease = last.lease_grant(30, None).await.unwrap().id();
    let held = holder
        .lock("jobs", Some(LockOptions::new().with_lease(holder_lease)))
        .await
        .unwrap();

    let lock_in_turn = |mut client: Client, lease: i64| {
        tokio::spawn(async move {
            let response = client
                .lock("jobs", Some(LockOptions::new().with_lease(lease)))
                .await;
            response.map(|locked| locked.key().to_vec())
        })
    };
    let leaving_turn = lock_in_turn(leaving.clone(), leaving_lease);
    tokio::time::sleep(STAYS_BLOCKED).await;
    let mut last_turn = lock_in_turn(last, last_lease);
    tokio::time::sleep(STAYS_BLOCKED).await;

    // The waiter just ahead of the last leaves the line; the holder still holds the lock.
    leaving.lease_revoke(leaving_lease).await.unwrap();
    assert!(
        leaving_turn.await.unwrap().is_err(),
        "a revoked waiter got the lock"
    );
    assert!(
        tokio::time::timeout(STAYS_BLOCKED, &mut last_turn)
            .await
            .is_err(),
        "the last waiter took the lock from its holder"
    );

    holder.unlock(held.key().to_vec()).await.unwrap();
    let key = tokio::time::timeout(Duration::from_secs(10), last_turn)
        .await
        .expect("the last waiter got the lock once the holder let go")
        .unwrap()
        .unwrap();
    assert_eq!(key, format!("jobs/{last_lease:x}").into_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn campaign_proclaim_leader_observe_and_resign_keep_one_leader_at_a_time() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    let mut alice = client(&cluster, 0).await;
    let mut bob = client(&cluster, 1).await;
    let mut watcher = client(&cluster, 2).await;
    let alice_lease = alice.lease_grant(30, None).await.unwrap().id();
    let bob_lease = bob.lease_grant(30, None).await.unwrap().id();

    let mut observed = watcher.observe("scheduler").await.unwrap();
    let alice_leads = alice
        .campaign("scheduler", "alice:1", alice_lease)
        .await
        .unwrap();
    let alice_key = alice_leads.leader().unwrap().clone();
    assert_eq!(
        alice_key.key(),
        format!("scheduler/{alice_lease:x}").as_bytes()
    );
    assert_eq!(alice_key.lease(), alice_lease);

    let first = observed.message().await.unwrap().unwrap();
    assert_eq!(first.kv().unwrap().value(), b"alice:1");

    let mut bob_campaign = tokio::spawn(async move {
        let response = bob.campaign("scheduler", "bob:1", bob_lease).await.unwrap();
        (bob, response.leader().unwrap().clone())
    });
    assert!(
        tokio::time::timeout(STAYS_BLOCKED, &mut bob_campaign)
            .await
            .is_err(),
        "two candidates lead at once"
    );
    let leader = watcher.leader("scheduler").await.unwrap();
    assert_eq!(leader.kv().unwrap().value(), b"alice:1");

    alice
        .proclaim(
            "alice:2",
            Some(ProclaimOptions::new().with_leader(alice_key.clone())),
        )
        .await
        .unwrap();
    let proclaimed = observed.message().await.unwrap().unwrap();
    assert_eq!(proclaimed.kv().unwrap().value(), b"alice:2");
    assert_eq!(
        watcher
            .leader("scheduler")
            .await
            .unwrap()
            .kv()
            .unwrap()
            .value(),
        b"alice:2"
    );

    alice
        .resign(Some(ResignOptions::new().with_leader(alice_key.clone())))
        .await
        .unwrap();
    let (mut bob, bob_key) = bob_campaign.await.unwrap();
    assert_eq!(bob_key.key(), format!("scheduler/{bob_lease:x}").as_bytes());
    let handed_over = observed.message().await.unwrap().unwrap();
    assert_eq!(handed_over.kv().unwrap().value(), b"bob:1");
    assert_eq!(handed_over.kv().unwrap().key(), bob_key.key());

    // The old leadership can no longer proclaim.
    let error = alice
        .proclaim(
            "alice:3",
            Some(ProclaimOptions::new().with_leader(alice_key)),
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("election: not leader"),
        "{error}"
    );

    bob.resign(Some(ResignOptions::new().with_leader(bob_key)))
        .await
        .unwrap();
    let error = watcher.leader("scheduler").await.unwrap_err();
    assert!(error.to_string().contains("election: no leader"), "{error}");
}
