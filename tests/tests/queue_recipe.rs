//! The bundled queue on a three-member cluster, through cairn-client: producers and consumers
//! spread over every member, consumers that die holding a message, and the guarantees:
//! no acknowledged push is lost, and no message is delivered twice within its visibility window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::Client;
use cairn_client::queue::{Delivery, PushOptions};
use cairn_tests::cluster::Cluster;
use cairn_tests::plugins::wait_deployed;
use rand::Rng;
use tokio::task::JoinSet;

const PRODUCERS: usize = 4;
const PUSHES: usize = 150;
const CONSUMERS: usize = 6;
const VISIBILITY: Duration = Duration::from_secs(2);
/// One in this many deliveries is dropped by its consumer, as if it died holding the message.
const ABANDON_ONE_IN: u32 = 10;

async fn client(cluster: &Cluster, i: usize) -> Client {
    Client::connect(cluster.endpoint(i % cluster.size()))
        .await
        .unwrap()
}

/// Every delivery of one message, in claim order, and whether one of them was acked.
#[derive(Default)]
struct History {
    deliveries: Vec<Delivery>,
    claimed_at_ms: Vec<u64>,
    acked: bool,
}

#[tokio::test(flavor = "multi_thread")]
async fn no_acknowledged_message_is_lost_or_delivered_twice_within_its_visibility() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    wait_deployed(cluster.endpoint(0), "queue").await;

    let mut producers = JoinSet::new();
    for producer in 0..PRODUCERS {
        let client = client(&cluster, producer).await;
        producers.spawn(async move {
            let mut pushed = Vec::new();
            for n in 0..PUSHES {
                let body = format!("p{producer}-{n}");
                client
                    .push("jobs", &body, &PushOptions::default())
                    .await
                    .unwrap();
                pushed.push(body);
            }
            pushed
        });
    }

    let histories: Arc<Mutex<BTreeMap<String, History>>> = Arc::default();
    let mut consumers = JoinSet::new();
    for consumer in 0..CONSUMERS {
        let client = client(&cluster, consumer).await;
        let histories = histories.clone();
        consumers.spawn(async move {
            let mut idle = 0;
            // Ends once the queue has stayed empty for a while after the producers are done.
            while idle < 40 {
                let claimed = client.claim("jobs", VISIBILITY, 4).await.unwrap();
                if claimed.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                idle = 0;
                for delivery in claimed {
                    let claimed_at = delivery.invisible_until_ms - VISIBILITY.as_millis() as u64;
                    {
                        let mut histories = histories.lock().unwrap();
                        let history = histories.entry(delivery.body.clone()).or_default();
                        history.deliveries.push(delivery.clone());
                        history.claimed_at_ms.push(claimed_at);
                    }
                    // A message's last attempt is never abandoned: after it the queue dead-letters
                    // the message by design, which is no loss (five abandonments in a row came up
                    // about once in 170 runs).
                    let last_attempt = delivery.attempts >= PushOptions::default().max_attempts;
                    if !last_attempt && rand::rng().random_ratio(1, ABANDON_ONE_IN) {
                        continue;
                    }
                    let acked = client.ack("jobs", &delivery.receipt).await.unwrap();
                    assert!(acked, "an ack within the visibility window was refused");
                    histories
                        .lock()
                        .unwrap()
                        .get_mut(&delivery.body)
                        .unwrap()
                        .acked = true;
                }
            }
        });
    }

    let mut pushed = BTreeSet::new();
    for bodies in producers.join_all().await {
        pushed.extend(bodies);
    }
    tokio::time::timeout(Duration::from_secs(240), consumers.join_all())
        .await
        .expect("the consumers drained the queue");

    let histories = std::mem::take(&mut *histories.lock().unwrap());
    let acked: BTreeSet<String> = histories
        .iter()
        .filter(|(_, history)| history.acked)
        .map(|(body, _)| body.clone())
        .collect();
    let unacked: Vec<(&String, usize)> = pushed
        .difference(&acked)
        .map(|body| (body, histories.get(body).map_or(0, |h| h.deliveries.len())))
        .collect();
    assert_eq!(
        acked, pushed,
        "acknowledged pushes and acked messages differ; pushed but never acked, with how often \
         each was delivered: {unacked:?}"
    );
    let mut redelivered = 0;
    for (body, history) in histories.iter() {
        for (n, pair) in history.deliveries.windows(2).enumerate() {
            redelivered += 1;
            assert!(
                history.claimed_at_ms[n + 1] >= pair[0].invisible_until_ms,
                "{body} was delivered again at {} ms, within the visibility that ended at {}",
                history.claimed_at_ms[n + 1],
                pair[0].invisible_until_ms
            );
            assert_eq!(pair[1].attempts, pair[0].attempts + 1, "{body}");
            assert_ne!(pair[1].receipt, pair[0].receipt, "{body}");
        }
    }
    assert!(redelivered > 0, "no consumer abandoned a message");
    let lengths = client(&cluster, 0).await.queue_len("jobs").await.unwrap();
    assert_eq!((lengths.ready, lengths.claimed, lengths.delayed), (0, 0, 0));
    eprintln!("{} messages, {redelivered} redeliveries", pushed.len());
    cluster.converged().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn priorities_delays_stale_receipts_and_dead_letters() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    wait_deployed(cluster.endpoint(0), "queue").await;
    let client = client(&cluster, 1).await;
    let push = |body: &'static str, options: PushOptions| {
        let client = client.clone();
        async move { client.push("work", body, &options).await.unwrap() }
    };
    push("low", PushOptions::default()).await;
    push(
        "later",
        PushOptions {
            priority: 9,
            delay: Duration::from_secs(4),
            ..PushOptions::default()
        },
    )
    .await;
    push(
        "high",
        PushOptions {
            priority: 5,
            ..PushOptions::default()
        },
    )
    .await;
    let peeked: Vec<String> = client
        .peek("work", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(
        peeked,
        ["high", "low"],
        "the delayed message is not deliverable yet"
    );
    let lengths = client.queue_len("work").await.unwrap();
    assert_eq!((lengths.ready, lengths.delayed), (2, 1));

    let first = client
        .claim("work", Duration::from_millis(300), 1)
        .await
        .unwrap();
    assert_eq!(first[0].body, "high");
    tokio::time::sleep(Duration::from_millis(4200)).await;
    // The delayed message is now first by priority; the unacked "high" is back.
    let next: Vec<String> = client
        .claim("work", Duration::from_secs(30), 3)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.body)
        .collect();
    assert_eq!(next, ["later", "high", "low"]);
    assert!(
        !client.ack("work", &first[0].receipt).await.unwrap(),
        "a stale receipt was accepted"
    );

    push(
        "poison",
        PushOptions {
            max_attempts: 2,
            ..PushOptions::default()
        },
    )
    .await;
    for attempt in 1..=2 {
        let delivery = client
            .claim("work", Duration::from_secs(30), 1)
            .await
            .unwrap();
        assert_eq!(delivery[0].body, "poison");
        assert_eq!(delivery[0].attempts, attempt);
        let nacked = client
            .nack("work", &delivery[0].receipt, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!((nacked.requeued, nacked.dead), (attempt < 2, attempt == 2));
    }
    let dead = client.dead_letters("work", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    assert_eq!(client.queue_len("work").await.unwrap().dead, 1);
    assert!(
        client
            .claim("work", Duration::from_secs(1), 1)
            .await
            .unwrap()
            .is_empty()
    );
}
