//! The request size limit: etcd's default and its error, and the flag that changes it.

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_tests::{free_port, start_cairn, start_cairn_with, start_etcd};
use tonic::Code;

fn put(size: usize) -> PutRequest {
    PutRequest {
        key: b"big".to_vec(),
        value: vec![b'v'; size],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_writes_fail_as_in_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path()).await.unwrap();
    let cairn = start_cairn(&dir.path().join("cairn")).await.unwrap();
    for server in [&etcd, &cairn] {
        let mut kv = server.kv().await.unwrap();
        kv.put(put(1_400_000))
            .await
            .expect("1.4 MB is under the 1.5 MiB default");
        let refused = kv.put(put(1_700_000)).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{}: {refused:?}",
            server.endpoint
        );
        assert_eq!(refused.message(), "etcdserver: request is too large");
        // Far past the limit the transport refuses the message before the server reads it. Go's
        // gRPC says RESOURCE_EXHAUSTED, tonic OUT_OF_RANGE (a documented difference); either
        // way nothing is written, which the read below checks.
        let refused = kv.put(put(3_000_000)).await.unwrap_err();
        assert!(
            matches!(refused.code(), Code::ResourceExhausted | Code::OutOfRange),
            "{}: {refused:?}",
            server.endpoint
        );
    }
    let mut kv = cairn.kv().await.unwrap();
    let kept = kv
        .range(RangeRequest {
            key: b"big".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        kept.kvs[0].value.len(),
        1_400_000,
        "refused writes wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_limit_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = start_cairn_with(
        &dir.path().join("data"),
        free_port(),
        &["--max-request-bytes", "1024"],
    )
    .await
    .unwrap();
    let mut kv = cairn.kv().await.unwrap();
    kv.put(put(900)).await.unwrap();
    let refused = kv.put(put(2000)).await.unwrap_err();
    assert_eq!(refused.message(), "etcdserver: request is too large");
}
