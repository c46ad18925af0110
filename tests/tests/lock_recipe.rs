//! The bundled lock on a three-member cluster of real processes, through etcd's v3lock service
//! and `cairn lock`: a killed holder's lock passes on within its lease's TTL + 1 s, and twenty
//! contending clients, some killed at random, never hold it at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{Client, Session};
use cairn_proto::cairn_v1::OwnerRequest;
use cairn_proto::cairn_v1::locks_client::LocksClient;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use cairn_tests::cairn_binary;
use cairn_tests::cluster::Cluster;
use rand::Rng;
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The TTL of contenders' leases, in seconds: short, so kills cost little time, yet long enough
/// that keep-alives get through while the whole test suite loads the machine.
const TTL: i64 = 5;
const CLIENTS: usize = 20;
const ACQUISITIONS: usize = 200;
const KILLS: usize = 8;

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A lease of `ttl` seconds, kept alive until dropped (as a killed process's would stop being).
async fn session(channel: &Channel, ttl: i64) -> Session {
    Client::from_channel(channel.clone())
        .session(ttl)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_holders_lock_passes_to_the_next_waiter_within_ttl_and_a_second() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    let mut holder = tokio::process::Command::new(cairn_binary())
        .args(["lock", "--ttl", &TTL.to_string(), "--endpoints"])
        .arg(cluster.endpoint(0))
        .arg("jobs")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(holder.stdout.take().unwrap()).lines();
    let holder_key = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("cairn lock printed its key")
        .unwrap()
        .unwrap();
    assert!(holder_key.starts_with("jobs/"), "{holder_key}");

    let waiter_channel = channel(cluster.endpoint(1)).await;
    let waiter_session = session(&waiter_channel, 30).await;
    let lease = waiter_session.lease();
    let mut locks = LockClient::new(waiter_channel.clone());
    let waiting = tokio::spawn(async move {
        let response = locks
            .lock(LockRequest {
                name: b"jobs".to_vec(),
                lease,
            })
            .await
            .unwrap()
            .into_inner();
        (Instant::now(), response)
    });
    let mut owners = LocksClient::new(waiter_channel);
    cairn_tests::eventually("the waiter is in line", async || {
        let lines = KvClient::new(channel(cluster.endpoint(2)).await)
            .range(RangeRequest {
                key: b"jobs/".to_vec(),
                range_end: b"jobs0".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        lines.count == 2
    })
    .await;
    assert!(!waiting.is_finished(), "the waiter got a held lock");

    holder.start_kill().unwrap();
    let killed = Instant::now();
    holder.wait().await.unwrap();
    let (acquired, response) = waiting.await.unwrap();
    let handed_over = acquired - killed;
    assert!(
        handed_over <= Duration::from_secs(TTL as u64 + 1),
        "the lock passed on {handed_over:?} after its holder was killed"
    );
    let owner = owners
        .owner(OwnerRequest {
            name: b"jobs".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(owner.held);
    assert_eq!(owner.key, response.key);
    assert_eq!(owner.lease, lease);
    assert_ne!(owner.key, holder_key.as_bytes());
}

/// One holding of the lock as its client saw it.
#[derive(Debug, Clone, Copy)]
struct Holding {
    token: i64,
    from: Instant,
    until: Instant,
}

/// What a client slot shares with the test: the holding in progress, if any.
type Current = Arc<Mutex<Option<(i64, Instant)>>>;

/// Acquires the lock `count` times through `endpoint`, each time checking with a fenced write
/// that it holds it, and records each holding; returns when done.
async fn contend(
    endpoint: String,
    client: usize,
    count: usize,
    current: Current,
    holdings: Arc<Mutex<Vec<Holding>>>,
) {
    let channel = channel(&endpoint).await;
    let session = session(&channel, TTL).await;
    let lease = session.lease();
    let mut locks = LockClient::new(channel.clone());
    let mut kv = KvClient::new(channel);
    for n in 0..count {
        let key = locks
            .lock(LockRequest {
                name: b"contended".to_vec(),
                lease,
            })
            .await
            .unwrap()
            .into_inner()
            .key;
        let from = Instant::now();
        // The fenced write: made only if the key still exists, and reading its create revision
        // (the fencing token) in the same revision.
        let fenced = kv
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Greater as i32,
                    target: CompareTarget::Version as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::Version(0)),
                    ..Default::default()
                }],
                success: vec![
                    RequestOp {
                        request: Some(Op::RequestRange(RangeRequest {
                            key: key.clone(),
                            ..Default::default()
                        })),
                    },
                    RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: b"guarded".to_vec(),
                            value: format!("client {client} holding {n}").into_bytes(),
                            ..Default::default()
                        })),
                    },
                ],
                failure: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            fenced.succeeded,
            "client {client} lost the lock it was granted"
        );
        let Some(OpResponse::ResponseRange(range)) = &fenced.responses[0].response else {
            panic!("the txn answered its range with {:?}", fenced.responses[0]);
        };
        let token = range.kvs[0].create_revision;
        *current.lock().unwrap() = Some((token, from));
        tokio::time::sleep(Duration::from_millis(2)).await;
        let until = Instant::now();
        *current.lock().unwrap() = None;
        holdings
            .lock()
            .unwrap()
            .push(Holding { token, from, until });
        locks.unlock(UnlockRequest { key }).await.unwrap();
    }
}

/// A slot whose client holds the lock, waiting a while for one to.
async fn holding_slot(slots: &[(JoinHandle<()>, Current, usize)]) -> Option<usize> {
    for _ in 0..1000 {
        if let Some(slot) = slots
            .iter()
            .position(|(task, current, _)| !task.is_finished() && current.lock().unwrap().is_some())
        {
            return Some(slot);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_contending_clients_killed_at_random_never_hold_the_lock_at_once() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    let holdings = Arc::new(Mutex::new(Vec::new()));
    let mut slots: Vec<(JoinHandle<()>, Current, usize)> = (0..CLIENTS)
        .map(|client| {
            let current = Current::default();
            let task = tokio::spawn(contend(
                cluster.endpoint(client % 3).to_string(),
                client,
                ACQUISITIONS,
                current.clone(),
                holdings.clone(),
            ));
            (task, current, client)
        })
        .collect();

    let mut rng = rand::rng();
    let mut kills = 0;
    let mut killed_holding = 0;
    while kills < KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        // Every other kill strikes a client while it holds the lock, the rest whoever comes.
        let slot = if kills % 2 == 0 {
            match holding_slot(&slots).await {
                Some(slot) => slot,
                None => continue,
            }
        } else {
            rng.random_range(0..CLIENTS)
        };
        let (task, current, client) = &mut slots[slot];
        if task.is_finished() {
            continue;
        }
        task.abort();
        let _ = (&mut *task).await;
        let killed = Instant::now();
        // A client killed while holding the lock held it until it died.
        if let Some((token, from)) = current.lock().unwrap().take() {
            holdings.lock().unwrap().push(Holding {
                token,
                from,
                until: killed,
            });
            killed_holding += 1;
        }
        kills += 1;
        // Its replacement, a new process with a new lease, goes on with fewer acquisitions.
        let fresh = Current::default();
        *task = tokio::spawn(contend(
            cluster.endpoint(*client % 3).to_string(),
            *client,
            ACQUISITIONS / 4,
            fresh.clone(),
            holdings.clone(),
        ));
        *current = fresh;
    }
    for (task, _, _) in slots {
        tokio::time::timeout(Duration::from_secs(300), task)
            .await
            .expect("the contenders finished")
            .unwrap();
    }

    let mut holdings = holdings.lock().unwrap().clone();
    holdings.sort_by_key(|h| h.from);
    assert!(
        holdings.len() >= (CLIENTS - KILLS) * ACQUISITIONS,
        "only {} holdings",
        holdings.len()
    );
    for pair in holdings.windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        assert!(
            earlier.until <= later.from,
            "two clients held the lock at once: {earlier:?} and {later:?}"
        );
        assert!(
            earlier.token < later.token,
            "the fencing token went from {} to {}",
            earlier.token,
            later.token
        );
    }
    eprintln!(
        "{} holdings, {kills} clients killed ({killed_holding} while holding)",
        holdings.len()
    );
    cluster.converged().await.unwrap();
}
