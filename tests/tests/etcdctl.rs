//! Debian's etcdctl 3.4, unmodified, against a fresh `cairn serve`: what it prints is what an
//! etcd user sees.

use cairn_proto::etcdserverpb::RangeRequest;
use cairn_tests::etcdctl::{Etcdctl, json};
use cairn_tests::start_cairn;

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_drives_a_fresh_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_cairn(&dir.path().join("data")).await.unwrap();
    let ctl = Etcdctl::new(server.endpoint.clone());

    // Revisions 2..=5.
    for (key, value) in [("a/1", "one"), ("a/2", "two"), ("a/3", "three"), ("b", "x")] {
        assert_eq!(ctl.ok(&["put", key, value]), "OK\n");
    }
    assert_eq!(ctl.ok(&["get", "b"]), "b\nx\n");
    assert_eq!(
        ctl.ok(&["get", "--prefix", "a/"]),
        "a/1\none\na/2\ntwo\na/3\nthree\n"
    );
    assert_eq!(
        ctl.ok(&["get", "--prefix", "a/", "--limit", "2"]),
        "a/1\none\na/2\ntwo\n"
    );
    assert_eq!(
        ctl.ok(&["get", "--prefix", "a/", "--rev", "3"]),
        "a/1\none\na/2\ntwo\n"
    );
    assert_eq!(ctl.ok(&["get", "a/1", "--rev", "1"]), "");
    assert_eq!(
        ctl.ok(&[
            "get",
            "--prefix",
            "a/",
            "--sort-by=MODIFY",
            "--order=DESCEND"
        ]),
        "a/3\nthree\na/2\ntwo\na/1\none\n"
    );
    assert_eq!(
        ctl.ok(&["get", "--prefix", "a/", "--sort-by=VALUE"]),
        "a/1\none\na/3\nthree\na/2\ntwo\n"
    );
    assert_eq!(
        ctl.ok(&["get", "--prefix", "a/", "--keys-only"]),
        "a/1\n\na/2\n\na/3\n\n"
    );
    assert_eq!(
        ctl.ok(&["get", "", "--from-key", "--keys-only"]),
        "a/1\n\na/2\n\na/3\n\nb\n\n"
    );

    // etcdctl 3.4 has no --count-only flag (3.5 added it); its JSON output shows the count, which
    // limits do not change, and the raw gRPC call below covers count_only itself.
    let limited = json(&ctl.ok(&["get", "--prefix", "a/", "--limit", "1", "-w", "json"]));
    assert_eq!(limited["count"], 3);
    assert_eq!(limited["more"], true);
    assert_eq!(limited["kvs"].as_array().unwrap().len(), 1);
    assert_eq!(limited["header"]["revision"], 5);
    let counted = server
        .kv()
        .await
        .unwrap()
        .range(RangeRequest {
            key: b"a/".to_vec(),
            range_end: b"a0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((counted.count, counted.kvs.len()), (3, 0));

    // Revision 6 deletes a/3; revision 7 the rest of a/.
    assert_eq!(ctl.ok(&["del", "a/3"]), "1\n");
    assert_eq!(ctl.ok(&["del", "a/3"]), "0\n");
    assert_eq!(ctl.ok(&["del", "--prefix", "a/"]), "2\n");
    assert_eq!(ctl.ok(&["get", "--prefix", "a/"]), "");

    // Interactive txn through stdin: compares, blank line, success ops, blank line, failure ops.
    let txn = ctl.run(
        &["txn", "-i"],
        Some("value(\"b\") = \"x\"\n\nput b y\nget b\n\nput b z\n\n"),
    );
    assert!(txn.ok, "txn failed: {}", txn.stderr);
    assert!(
        txn.stdout.ends_with("SUCCESS\n\nOK\n\nb\ny\n"),
        "unexpected txn output: {:?}",
        txn.stdout
    );
    let txn = ctl.run(
        &["txn"],
        Some("mod(\"b\") < \"3\"\n\nput b never\n\nget b\n\n"),
    );
    assert!(txn.ok, "txn failed: {}", txn.stderr);
    assert_eq!(txn.stdout, "FAILURE\n\nb\ny\n");
    let revisions = json(&ctl.ok(&["get", "b", "-w", "json"]));
    assert_eq!(revisions["kvs"][0]["mod_revision"], 8);
    assert_eq!(revisions["kvs"][0]["version"], 2);

    // Compaction, and etcd's errors for what it removed and what does not exist yet.
    assert_eq!(ctl.ok(&["compaction", "4"]), "compacted revision 4\n");
    assert!(
        ctl.fails(&["get", "a/1", "--rev", "3"])
            .contains("etcdserver: mvcc: required revision has been compacted")
    );
    assert_eq!(
        ctl.ok(&["get", "--prefix", "a/", "--rev", "4"]),
        "a/1\none\na/2\ntwo\na/3\nthree\n"
    );
    assert!(
        ctl.fails(&["compaction", "4"])
            .contains("required revision has been compacted")
    );
    assert!(
        ctl.fails(&["get", "b", "--rev", "100"])
            .contains("etcdserver: mvcc: required revision is a future revision")
    );
    assert!(
        ctl.fails(&["put", "", "v"])
            .contains("etcdserver: key is not provided")
    );

    let status = ctl.ok(&["endpoint", "status"]);
    let fields: Vec<&str> = status.trim_end().split(", ").collect();
    assert_eq!(fields[0], server.endpoint);
    assert_eq!(fields[2], "3.4.0", "version in {status:?}");
    assert_eq!(fields[4], "true", "a single member leads: {status:?}");
    assert_eq!(fields[5], "false", "not a learner: {status:?}");
    let status = json(&ctl.ok(&["endpoint", "status", "-w", "json"]));
    let status = &status[0]["Status"];
    assert_eq!(status["header"]["revision"], 8);
    assert_eq!(status["leader"], status["header"]["member_id"]);
    assert!(status["dbSize"].as_i64().unwrap() > 0);
    assert!(
        status["raftIndex"].as_u64().unwrap() >= 9,
        "one index per write: {status}"
    );

    let members = ctl.ok(&["member", "list"]);
    let member_id = format!("{:x}", status["header"]["member_id"].as_u64().unwrap());
    let fields: Vec<&str> = members.trim_end().split(", ").collect();
    assert_eq!(fields.len(), 6, "one member: {members:?}");
    assert_eq!(
        fields[..3],
        [member_id.as_str(), "started", "default"],
        "{members:?}"
    );
    assert!(
        fields[3].starts_with("http://127.0.0.1:"),
        "peer URL in {members:?}"
    );
    assert_eq!(
        fields[4..],
        [server.endpoint.as_str(), "false"],
        "{members:?}"
    );
}
