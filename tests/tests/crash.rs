//! Crash durability: concurrent clients write while the server is SIGKILLed, again and again.
//! After each restart every acknowledged write is there at the revision it was acknowledged
//! with, and every txn, acknowledged or not, is there whole or not at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use cairn_tests::{free_port, start_cairn_on};
use tokio::sync::Mutex;

const CLIENTS: usize = 8;
const ROUNDS: usize = 3;
const TXN_KEYS: usize = 3;

#[derive(Clone, Debug)]
enum Write {
    Put { key: String, value: String },
    Txn { keys: Vec<String>, value: String },
}

#[derive(Default)]
struct Ledger {
    /// Writes the server acknowledged, with the revision it gave.
    acknowledged: Vec<(Write, i64)>,
    /// Every txn sent, answered or not.
    attempted_txns: Vec<Write>,
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

async fn write_until_stopped(
    endpoint: String,
    client_id: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let Ok(mut kv) = cairn_proto::etcdserverpb::kv_client::KvClient::connect(endpoint).await else {
        return;
    };
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let value = format!("r{round}c{client_id}i{i}");
        let write = if i % 3 == 0 {
            Write::Txn {
                keys: (0..TXN_KEYS)
                    .map(|k| format!("txn/{round}/{client_id}/{i}/{k}"))
                    .collect(),
                value,
            }
        } else {
            Write::Put {
                key: format!("put/{round}/{client_id}/{i}"),
                value,
            }
        };
        let revision = match &write {
            Write::Put { key, value } => kv
                .put(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().header.unwrap().revision),
            Write::Txn { keys, value } => {
                ledger.lock().await.attempted_txns.push(write.clone());
                kv.txn(TxnRequest {
                    success: keys.iter().map(|key| put_op(key, value)).collect(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().header.unwrap().revision)
            }
        };
        match revision {
            Ok(revision) => ledger.lock().await.acknowledged.push((write, revision)),
            // The server is gone; nothing later from this client can be acknowledged.
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let port = free_port();
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    for round in 0..ROUNDS {
        let mut server = start_cairn_on(&data_dir, port).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(write_until_stopped(
                    server.endpoint.clone(),
                    c,
                    round,
                    stop.clone(),
                    ledger.clone(),
                ))
            })
            .collect();
        // Let the load build up, then pull the plug mid-stream.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await.unwrap();
        }
    }

    let server = start_cairn_on(&data_dir, port).await.unwrap();
    let mut kv = server.kv().await.unwrap();
    let ledger = ledger.lock().await;
    assert!(
        ledger.acknowledged.len() > ROUNDS * CLIENTS,
        "too little load to mean anything: {} acknowledged writes",
        ledger.acknowledged.len()
    );

    println!(
        "{} acknowledged writes over {ROUNDS} SIGKILLs, {} txns attempted",
        ledger.acknowledged.len(),
        ledger.attempted_txns.len()
    );

    let mut read = async |key: &str| {
        let response = kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        response.kvs.into_iter().next()
    };

    let mut newest_acknowledged = 0;
    for (write, revision) in &ledger.acknowledged {
        newest_acknowledged = newest_acknowledged.max(*revision);
        let (keys, value) = match write {
            Write::Put { key, value } => (vec![key.clone()], value),
            Write::Txn { keys, value } => (keys.clone(), value),
        };
        for key in keys {
            let kv = read(&key)
                .await
                .unwrap_or_else(|| panic!("acknowledged {write:?} lost"));
            assert_eq!(kv.value, value.as_bytes(), "{key}");
            assert_eq!(
                kv.mod_revision, *revision,
                "{key} moved from its acknowledged revision"
            );
        }
    }

    for write in &ledger.attempted_txns {
        let Write::Txn { keys, value } = write else {
            unreachable!()
        };
        let mut found = Vec::new();
        for key in keys {
            found.push(read(key).await);
        }
        let present = found.iter().filter(|kv| kv.is_some()).count();
        assert!(
            present == 0 || present == TXN_KEYS,
            "txn half-applied: {found:?}"
        );
        if present == TXN_KEYS {
            let revisions: Vec<_> = found.iter().flatten().map(|kv| kv.mod_revision).collect();
            assert!(
                revisions.windows(2).all(|w| w[0] == w[1]),
                "one txn, several revisions: {revisions:?}"
            );
            assert!(
                found
                    .iter()
                    .flatten()
                    .all(|kv| kv.value == value.as_bytes())
            );
        }
    }

    let revision = kv
        .range(RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    assert!(
        revision >= newest_acknowledged,
        "revision went back from {newest_acknowledged} to {revision}"
    );
}
