//! Cluster identity on the peer port, with real processes: a member never takes Raft traffic
//! from another cluster (a mistyped `member add`, another token, a backup restored as a new
//! cluster), a removed member cannot write into the cluster it left, and a member whose state
//! machine fails exits with one clear line while the others elect and serve.

use std::path::Path;
use std::time::Duration;

use cairn_proto::etcdserverpb::MemberAddRequest;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_tests::cluster::Cluster;
use cairn_tests::etcdctl::{Etcdctl, json};
use cairn_tests::{eventually, free_port, snapshot_restore, start_cairn_on};

/// How long a refused member is watched: several heartbeats and election timeouts.
const WATCHED: Duration = Duration::from_secs(4);

async fn cluster_id(cluster: &Cluster, i: usize) -> u64 {
    let status = cluster.status(i).await.unwrap();
    status.header.unwrap().cluster_id
}

fn member_count(etcdctl: &Etcdctl) -> usize {
    let list = json(&etcdctl.ok(&["member", "list", "-w", "json"]));
    list["members"].as_array().unwrap().len()
}

/// etcdctl's `member add NAME --learner --peer-urls=URL`.
fn add_learner(etcdctl: &Etcdctl, url: &str) -> cairn_tests::etcdctl::Output {
    etcdctl.run(
        &[
            "member",
            "add",
            "oops",
            "--learner",
            &format!("--peer-urls={url}"),
        ],
        None,
    )
}

/// Asserts that a `member add` failed because a member of another cluster answers at the URL.
fn assert_refused_as_another_clusters(added: &cairn_tests::etcdctl::Output) {
    assert!(
        !added.ok && added.stderr.contains("a member of another cluster"),
        "{}{}",
        added.stdout,
        added.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_add_of_another_clusters_member_is_refused_and_both_keep_their_data() {
    let mut x = Cluster::start(1, &[]).await.unwrap();
    let y = Cluster::start(1, &[]).await.unwrap();
    let (x_ctl, y_ctl) = (Etcdctl::new(x.endpoint(0)), Etcdctl::new(y.endpoint(0)));
    x_ctl.ok(&["put", "owner", "x"]);
    y_ctl.ok(&["put", "owner", "y"]);
    assert_ne!(
        cluster_id(&x, 0).await,
        cluster_id(&y, 0).await,
        "two clusters on the default token share an ID"
    );
    let (x_hash, y_hash) = (x.hash_kv(0).await.unwrap(), y.hash_kv(0).await.unwrap());

    // The mistake itself: y is told to take x as a learner.
    let x_peer = x.specs[0].peer_url.clone();
    let refused = add_learner(&y_ctl, &x_peer);
    assert_refused_as_another_clusters(&refused);
    assert!(refused.stderr.contains(&x_peer), "{}", refused.stderr);
    assert_eq!(member_count(&y_ctl), 1);

    // Added while x is down, so nothing answers at its URL: x refuses y's leader once it is
    // back, before reading a message, and both say so.
    x.kill(0);
    let added = add_learner(&y_ctl, &x_peer);
    assert!(added.ok, "{}", added.stderr);
    x.restart(0).await.unwrap();
    eventually("x logs that it refused y", async || {
        x.log_text(0)
            .contains("the two belong to different clusters")
    })
    .await;
    eventually("y logs that x refused it", async || {
        y.log_text(0).contains("a peer refused this member")
    })
    .await;
    tokio::time::sleep(WATCHED).await;

    assert_eq!(x.hash_kv(0).await.unwrap(), x_hash, "x took y's log");
    assert_eq!(y.hash_kv(0).await.unwrap(), y_hash);
    assert_eq!(member_count(&x_ctl), 1, "x joined y's membership");
    let x_status = x.status(0).await.unwrap();
    assert_eq!(x_status.leader, x.member_id(0).await.unwrap());
    assert_eq!(
        x_ctl.ok(&["get", "owner", "--print-value-only"]),
        "x\n",
        "x's own data"
    );
    assert_eq!(x_ctl.ok(&["put", "after", "x"]), "OK\n");
    assert_eq!(y_ctl.ok(&["put", "after", "y"]), "OK\n");
    assert_eq!(
        y_ctl.ok(&["get", "after", "--print-value-only"]),
        "y\n",
        "x's write reached y"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_with_another_token_cannot_join() {
    let mut cluster = Cluster::start(1, &[]).await.unwrap();
    let etcdctl = Etcdctl::new(cluster.endpoint(0));
    etcdctl.ok(&["put", "k", "v"]);
    let joining = cluster.plan_member();
    let added = add_learner(&etcdctl, &cluster.specs[joining].peer_url.clone());
    assert!(added.ok, "{}", added.stderr);
    let hash = cluster.hash_kv(0).await.unwrap();

    let error = cluster
        .join_with(joining, &["--initial-cluster-token", "another-token"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("is not a member of cluster")
            && error.contains("--initial-cluster-token differs"),
        "{error}"
    );
    assert!(!cluster.is_running(joining));
    assert_eq!(cluster.hash_kv(0).await.unwrap(), hash);
    assert_eq!(etcdctl.ok(&["put", "k", "w"]), "OK\n");

    // The same member with the cluster's token joins.
    cluster.join(joining).await.unwrap();
    cluster.converged().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_never_added_stops_at_once_with_the_reason() {
    let mut cluster = Cluster::start(1, &[]).await.unwrap();
    let stray = cluster.plan_member();
    let error = cluster.join(stray).await.unwrap_err().to_string();
    assert!(
        error.contains("is not a member of cluster") && error.contains("etcdctl member add"),
        "{error}"
    );
}

/// An election timeout long enough that a removed member still knows the leader, and so sends it
/// what it is asked, for the seconds the test takes to ask it.
const LONG_ELECTION_TIMEOUT: &str = "5000";

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_member_cannot_disturb_the_cluster() {
    let cluster = Cluster::start(3, &["--election-timeout", LONG_ELECTION_TIMEOUT])
        .await
        .unwrap();
    let leader = cluster.leader().await.unwrap();
    let removed = (0..3).find(|&i| i != leader).unwrap();
    let removed_id = cluster.member_id(removed).await.unwrap();
    let all = Etcdctl::new(cluster.endpoint(leader));
    all.ok(&["member", "remove", &format!("{removed_id:x}")]);
    let term = cluster.status(leader).await.unwrap().raft_term;

    // The removed member keeps running; what it is asked to write never reaches the cluster.
    let stray = Etcdctl::new(cluster.endpoint(removed));
    let put = stray.run(&["put", "from-the-removed", "x"], None);
    assert!(!put.ok, "a removed member wrote: {}", put.stdout);
    assert!(
        put.stderr.contains("not a member of the cluster"),
        "{}",
        put.stderr
    );
    // Long enough for the removed member to stand for election, which is refused by Raft's own
    // rules: its log lacks the entry that removed it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stayed = (0..3).filter(|&i| i != removed);
    for i in stayed.clone() {
        let status = cluster.status(i).await.unwrap();
        assert_eq!(status.raft_term, term, "member {i} changed term");
        assert_eq!(status.leader, cluster.member_id(leader).await.unwrap());
    }
    let leader_ctl = Etcdctl::new(cluster.endpoint(leader));
    assert_eq!(leader_ctl.ok(&["put", "after", "removal"]), "OK\n");
    assert_eq!(
        leader_ctl.ok(&["get", "from-the-removed", "--print-value-only"]),
        "",
        "the removed member's write is in the cluster"
    );
    let refusals = stayed
        .filter(|&i| cluster.log_text(i).contains("not a member of the cluster"))
        .count();
    assert!(refusals > 0, "no member refused the removed one");
}

/// The peer URL `start_cairn_on` gave the member in `data_dir`.
fn peer_url_of(data_dir: &Path) -> String {
    let port = std::fs::read_to_string(data_dir.with_extension("peer-port")).unwrap();
    format!("http://127.0.0.1:{}", port.trim())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_restored_from_a_backup_is_a_new_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (original_dir, original_port) = (dir.path().join("original"), free_port());
    let mut original = start_cairn_on(&original_dir, original_port).await.unwrap();
    let original_ctl = Etcdctl::new(original.endpoint.clone());
    original_ctl.ok(&["put", "k", "before the backup"]);
    let backup = dir.path().join("backup.db");
    original_ctl.ok(&["snapshot", "save", backup.to_str().unwrap()]);
    let original_id = json(&original_ctl.ok(&["endpoint", "status", "-w", "json"]))[0]["Status"]
        ["header"]["cluster_id"]
        .as_u64()
        .unwrap();

    // Restored with the very flags and URLs of the original, the new cluster's ID still differs.
    original.terminate().unwrap();
    let same_urls = dir.path().join("same-urls");
    snapshot_restore(&backup, &same_urls).unwrap();
    std::fs::copy(
        original_dir.with_extension("peer-port"),
        same_urls.with_extension("peer-port"),
    )
    .unwrap();
    let mut twin = start_cairn_on(&same_urls, original_port).await.unwrap();
    let twin_ctl = Etcdctl::new(twin.endpoint.clone());
    let twin_id = json(&twin_ctl.ok(&["endpoint", "status", "-w", "json"]))[0]["Status"]["header"]
        ["cluster_id"]
        .as_u64()
        .unwrap();
    assert_ne!(twin_id, original_id);
    assert_eq!(
        twin_ctl.ok(&["get", "k", "--print-value-only"]),
        "before the backup\n"
    );
    twin.terminate().unwrap();

    // Beside the original, a restored member cannot be made part of it, nor it of the restored.
    let original = start_cairn_on(&original_dir, original_port).await.unwrap();
    let restored_dir = dir.path().join("restored");
    snapshot_restore(&backup, &restored_dir).unwrap();
    let restored = start_cairn_on(&restored_dir, free_port()).await.unwrap();
    let original_ctl = Etcdctl::new(original.endpoint.clone());
    let restored_ctl = Etcdctl::new(restored.endpoint.clone());
    assert_refused_as_another_clusters(&add_learner(&original_ctl, &peer_url_of(&restored_dir)));
    assert_refused_as_another_clusters(&add_learner(&restored_ctl, &peer_url_of(&original_dir)));
    assert_eq!(member_count(&original_ctl), 1);
    assert_eq!(member_count(&restored_ctl), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn members_restored_from_one_backup_agree_on_a_new_cluster_id() {
    let original = Cluster::start(1, &[]).await.unwrap();
    let original_ctl = Etcdctl::new(original.endpoint(0));
    original_ctl.ok(&["put", "k", "kept"]);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup.db");
    original_ctl.ok(&["snapshot", "save", backup.to_str().unwrap()]);

    let restored = Cluster::start_from_backup(3, &backup).await.unwrap();
    let id = cluster_id(&restored, 0).await;
    for i in 1..3 {
        assert_eq!(cluster_id(&restored, i).await, id, "member {i}");
    }
    assert_ne!(id, cluster_id(&original, 0).await);
    let restored_ctl = Etcdctl::new(restored.endpoints());
    assert_eq!(
        restored_ctl.ok(&["get", "k", "--print-value-only"]),
        "kept\n"
    );
    assert_eq!(restored_ctl.ok(&["put", "k", "new"]), "OK\n");
    restored.converged().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_state_machine_fails_exits_and_the_others_elect_and_serve() {
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    // m1 panics on applying a put of boom/panic, m2 fails as on a storage error on boom/error.
    for (i, fault) in [(1, "panic:boom/panic"), (2, "error:boom/error")] {
        cluster.stop(i).unwrap();
        cluster
            .restart_with(i, &[("CAIRN_TEST_FAULT", fault)])
            .await
            .unwrap();
    }
    let m1 = cluster.member_id(1).await.unwrap();
    cluster.leader().await.unwrap();
    let etcdctl = Etcdctl::new([0, 1, 2].map(|i| cluster.endpoint(i).to_string()).join(","));
    etcdctl.ok(&["move-leader", &format!("{m1:x}")]);
    assert_eq!(cluster.leader().await.unwrap(), 1);

    // A follower's failure: it exits, and the others go on.
    let at_m0 = Etcdctl::new(cluster.endpoint(0));
    at_m0.ok(&["put", "boom/error", "x"]);
    let exited = cluster.exited(2, Duration::from_secs(30)).unwrap();
    assert!(!exited.success(), "{exited}");
    let log = cluster.log_text(2);
    assert!(
        log.contains("stopped because its Raft failed") && log.contains("injected fault"),
        "{log}"
    );
    assert_eq!(at_m0.ok(&["put", "after/error", "y"]), "OK\n");
    // Restarted without the fault, it applies the same entry and rejoins.
    cluster.restart(2).await.unwrap();
    cluster.converged().await.unwrap();

    etcdctl.ok(&["move-leader", &format!("{m1:x}")]);
    assert_eq!(cluster.leader().await.unwrap(), 1);

    // The leader's failure: it exits, and the other two elect a leader and serve. The leader
    // fails while it applies the put, so the put's answer may be etcd's "server stopped", whose
    // outcome is unknown; the put is committed, as the others show.
    at_m0.run(&["put", "boom/panic", "z"], None);
    let exited = cluster.exited(1, Duration::from_secs(30)).unwrap();
    assert!(!exited.success(), "{exited}");
    let log = cluster.log_text(1);
    assert!(
        log.contains("stopped because its Raft failed") && log.contains("panicked"),
        "{log}"
    );
    let leader = cluster.leader().await.unwrap();
    assert_ne!(leader, 1);
    let at_leader = Etcdctl::new(cluster.endpoint(leader));
    assert_eq!(at_leader.ok(&["put", "after/panic", "w"]), "OK\n");
    cluster.converged().await.unwrap();
    for i in cluster.running() {
        let ctl = Etcdctl::new(cluster.endpoint(i));
        assert_eq!(ctl.ok(&["get", "boom/panic", "--print-value-only"]), "z\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn member_add_through_the_api_names_the_other_cluster() {
    let x = Cluster::start(1, &[]).await.unwrap();
    let y = Cluster::start(1, &[]).await.unwrap();
    let mut client = ClusterClient::connect(y.endpoint(0).to_string())
        .await
        .unwrap();
    let refused = client
        .member_add(MemberAddRequest {
            peer_urls: vec![x.specs[0].peer_url.clone()],
            is_learner: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let (x_id, y_id) = (cluster_id(&x, 0).await, cluster_id(&y, 0).await);
    assert!(
        refused.message().contains(&format!("{x_id:x}"))
            && refused.message().contains(&format!("{y_id:x}")),
        "{}",
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_from_before_stored_cluster_ids_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, port) = (dir.path().join("member"), free_port());
    let mut member = start_cairn_on(&data_dir, port).await.unwrap();
    Etcdctl::new(member.endpoint.clone()).ok(&["put", "k", "kept"]);
    member.terminate().unwrap();

    // An older build kept no cluster ID: the member takes the one those builds derived.
    std::fs::remove_file(data_dir.join("cluster-id")).unwrap();
    let mut member = start_cairn_on(&data_dir, port).await.unwrap();
    assert!(
        member.log_text().contains("written by an older Cairn"),
        "{}",
        member.log_text()
    );
    let ctl = Etcdctl::new(member.endpoint.clone());
    assert_eq!(ctl.ok(&["get", "k", "--print-value-only"]), "kept\n");
    assert_eq!(ctl.ok(&["put", "k", "still"]), "OK\n");
    let status = json(&ctl.ok(&["endpoint", "status", "-w", "json"]));
    let legacy_id = status[0]["Status"]["header"]["cluster_id"]
        .as_u64()
        .unwrap();
    member.terminate().unwrap();

    // Kept from then on.
    assert!(data_dir.join("cluster-id").exists());
    let member = start_cairn_on(&data_dir, port).await.unwrap();
    let ctl = Etcdctl::new(member.endpoint.clone());
    let status = json(&ctl.ok(&["endpoint", "status", "-w", "json"]));
    assert_eq!(
        status[0]["Status"]["header"]["cluster_id"].as_u64(),
        Some(legacy_id)
    );
    assert!(!member.log_text().contains("written by an older Cairn"));
}
