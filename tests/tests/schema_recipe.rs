//! The bundled schema validator on a three-member cluster: a JSON Schema stored in a key governs
//! the values written under a prefix, through etcdctl-style puts and Txns alike, and a schema
//! with an unknown keyword is refused when the validator also guards `schemas/`.

use cairn_proto::cairn_v1 as pb;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use cairn_tests::cluster::Cluster;
use cairn_tests::plugins::{client, wait_deployed};
use tonic::Code;
use tonic::transport::Channel;

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["host", "port"],
  "properties": {
    "host": {"type": "string", "minLength": 1},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535}
  },
  "additionalProperties": false
}"#;

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

async fn value(kv: &mut KvClient<Channel>, key: &str) -> Option<String> {
    let response = kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    response
        .kvs
        .first()
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_schema_governs_writes_under_its_prefix() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    wait_deployed(cluster.endpoint(0), "schema").await;
    let mut plugins = client(cluster.endpoint(0)).await.unwrap();
    for prefix in ["config/", "schemas/"] {
        plugins
            .bind(pb::BindRequest {
                name: "schema".to_string(),
                prefix: prefix.as_bytes().to_vec(),
                unbind: false,
            })
            .await
            .unwrap();
    }
    let mut kv = KvClient::connect(cluster.endpoint(1).to_string())
        .await
        .unwrap();

    let typo = kv
        .put(put(
            "schemas/config/",
            r#"{"type": "object", "requird": ["host"]}"#,
        ))
        .await
        .unwrap_err();
    assert_eq!(typo.code(), Code::FailedPrecondition);
    assert!(typo.message().contains("requird"), "{}", typo.message());

    kv.put(put("schemas/config/", SCHEMA)).await.unwrap();
    kv.put(put("config/db", r#"{"host": "db1", "port": 5432}"#))
        .await
        .unwrap();
    kv.put(put("unguarded", "not json")).await.unwrap();

    let refused = kv
        .put(put("config/db", r#"{"host": "db1", "port": 70000}"#))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("config/db") && refused.message().contains("/port"),
        "{}",
        refused.message()
    );
    let not_json = kv.put(put("config/cache", "host=x")).await.unwrap_err();
    assert_eq!(not_json.code(), Code::FailedPrecondition);

    let put_op = |key: &str, value: &str| RequestOp {
        request: Some(Op::RequestPut(put(key, value))),
    };
    let txn = kv
        .txn(TxnRequest {
            success: vec![
                put_op("config/a", r#"{"host": "a", "port": 1}"#),
                put_op("config/b", r#"{"host": "b"}"#),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(txn.code(), Code::FailedPrecondition);
    assert!(txn.message().contains("config/b"), "{}", txn.message());
    assert_eq!(
        value(&mut kv, "config/a").await,
        None,
        "half a txn was written"
    );
    assert_eq!(
        value(&mut kv, "config/db").await.as_deref(),
        Some(r#"{"host": "db1", "port": 5432}"#)
    );
    cluster.converged().await.unwrap();
}
