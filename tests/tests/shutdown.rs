//! SIGTERM stops a node cleanly: it exits with status 0 after closing its store, and the same
//! command line brings the data back.

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_tests::{free_port, start_cairn_on};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_cleanly_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let port = free_port();
    for round in 0..3u8 {
        let mut server = start_cairn_on(&data_dir, port).await.unwrap();
        let mut kv = server.kv().await.unwrap();
        let found = kv
            .range(RangeRequest {
                key: b"rounds".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let previous = found.kvs.first().map(|kv| kv.value.clone());
        assert_eq!(
            previous,
            (round > 0).then(|| vec![round - 1]),
            "round {round}"
        );
        kv.put(PutRequest {
            key: b"rounds".to_vec(),
            value: vec![round],
            ..Default::default()
        })
        .await
        .unwrap();
        drop(kv);
        let status = server.terminate().unwrap();
        assert!(
            status.success(),
            "exit {status} in round {round}; log:\n{}",
            server.log_text()
        );
    }
}
