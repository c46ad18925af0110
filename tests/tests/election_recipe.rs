//! The bundled election on a three-member cluster, through cairn-client: candidates that
//! campaign, lead, resign and campaign again, some killed while leading or waiting, are never
//! leaders at the same time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::Client;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest};
use cairn_tests::cluster::Cluster;
use cairn_tests::plugins::wait_deployed;
use rand::Rng;
use tokio::task::JoinHandle;

const CANDIDATES: usize = 6;
const TERMS: usize = 40;
const KILLS: usize = 6;
/// Long enough that keep-alives get through while the whole test suite loads the machine.
const TTL: i64 = 5;

#[derive(Clone, Copy, Debug)]
struct Term {
    rev: i64,
    from: Instant,
    until: Instant,
}

type Current = Arc<Mutex<Option<(i64, Instant)>>>;

/// Leads `terms` times: campaign, prove leadership with a fenced write, resign.
async fn stand(
    endpoint: String,
    candidate: usize,
    terms: usize,
    current: Current,
    log: Arc<Mutex<Vec<Term>>>,
) {
    let client = Client::connect(&endpoint).await.unwrap();
    let session = client.session(TTL).await.unwrap();
    let mut kv = KvClient::new(client.channel().clone());
    for term in 0..terms {
        let leadership = client
            .campaign("singleton", format!("candidate {candidate}"), &session)
            .await
            .unwrap();
        let from = Instant::now();
        let fenced = kv
            .txn(TxnRequest {
                compare: vec![leadership.fence()],
                success: vec![RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: b"singleton-output".to_vec(),
                        value: format!("candidate {candidate} term {term}").into_bytes(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            fenced.succeeded,
            "candidate {candidate} lost a leadership it was given"
        );
        *current.lock().unwrap() = Some((leadership.rev(), from));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let until = Instant::now();
        *current.lock().unwrap() = None;
        log.lock().unwrap().push(Term {
            rev: leadership.rev(),
            from,
            until,
        });
        leadership.resign().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn candidates_killed_at_random_never_lead_at_once() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    wait_deployed(cluster.endpoint(0), "election").await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut slots: Vec<(JoinHandle<()>, Current)> = (0..CANDIDATES)
        .map(|candidate| {
            let current = Current::default();
            let task = tokio::spawn(stand(
                cluster.endpoint(candidate % 3).to_string(),
                candidate,
                TERMS,
                current.clone(),
                log.clone(),
            ));
            (task, current)
        })
        .collect();

    let mut rng = rand::rng();
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        // Half the kills strike the leader, the rest anyone.
        let slot = if kill % 2 == 0 {
            slots
                .iter()
                .position(|(task, current)| {
                    !task.is_finished() && current.lock().unwrap().is_some()
                })
                .unwrap_or_else(|| rng.random_range(0..CANDIDATES))
        } else {
            rng.random_range(0..CANDIDATES)
        };
        let (task, current) = &mut slots[slot];
        task.abort();
        let _ = (&mut *task).await;
        let killed = Instant::now();
        if let Some((rev, from)) = current.lock().unwrap().take() {
            log.lock().unwrap().push(Term {
                rev,
                from,
                until: killed,
            });
        }
        let fresh = Current::default();
        *task = tokio::spawn(stand(
            cluster.endpoint(slot % 3).to_string(),
            slot,
            TERMS / 4,
            fresh.clone(),
            log.clone(),
        ));
        *current = fresh;
    }
    for (task, _) in slots {
        tokio::time::timeout(Duration::from_secs(240), task)
            .await
            .expect("the candidates finished")
            .unwrap();
    }

    let mut terms = log.lock().unwrap().clone();
    terms.sort_by_key(|term| term.from);
    // Each slot's last candidate served its whole quota, at least TERMS / 4.
    assert!(
        terms.len() >= CANDIDATES * TERMS / 4,
        "only {} terms",
        terms.len()
    );
    for pair in terms.windows(2) {
        assert!(
            pair[0].until <= pair[1].from,
            "two leaders at once: {:?} and {:?}",
            pair[0],
            pair[1]
        );
        assert!(
            pair[0].rev < pair[1].rev,
            "{:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    eprintln!("{} terms", terms.len());
    cluster.converged().await.unwrap();
}
