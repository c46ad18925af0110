//! Debian's etcdctl 3.4 against a three-member cairn cluster: membership, cluster-wide status
//! and hashes, and a backup that seeds a new cluster through `cairn snapshot restore`.

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_tests::cluster::Cluster;
use cairn_tests::etcdctl::{Etcdctl, json};
use cairn_tests::{cairn_binary, start_cairn};

/// `text` with every run of whitespace made one space: etcdctl pads member IDs (`%16x`).
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The hex member ID in etcdctl's "Member <id> added/promoted/removed ..." lines.
fn member_id_in(line: &str) -> String {
    line.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no member ID in {line:?}"))
        .to_string()
}

fn cairn_snapshot_restore(backup: &Path, data_dir: &Path) -> std::process::Output {
    std::process::Command::new(cairn_binary())
        .args(["snapshot", "restore"])
        .arg(backup)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap()
}

/// Runs `etcdctl ARGS` until its output holds `expected`, for at most 60 s.
async fn eventually_prints(etcdctl: &Etcdctl, args: &[&str], expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = etcdctl.run(args, None);
        if output.ok && output.stdout.contains(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "etcdctl {args:?} never printed {expected:?}: {}{}",
            output.stdout,
            output.stderr
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_manages_a_cluster() {
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    let all = Etcdctl::new(cluster.endpoints());
    assert_eq!(all.ok(&["put", "greeting", "hello"]), "OK\n");

    // Members publish their client URLs through the log shortly after they start.
    for spec in &cluster.specs {
        let line = format!(
            "started, {}, {}, {}, false",
            spec.name, spec.peer_url, spec.client_url
        );
        eventually_prints(&all, &["member", "list"], &line).await;
    }
    let list = json(&all.ok(&["member", "list", "-w", "json"]));
    let mut names: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["m0", "m1", "m2"]);

    let first = Etcdctl::new(cluster.endpoint(0));
    let statuses = json(&first.ok(&["endpoint", "status", "--cluster", "-w", "json"]));
    let statuses = statuses.as_array().unwrap();
    assert_eq!(statuses.len(), 3);
    let leader = &statuses[0]["Status"]["leader"];
    assert!(leader.as_u64().unwrap() != 0);
    for status in statuses {
        assert_eq!(&status["Status"]["leader"], leader, "{status}");
        assert!(status["Status"]["raftTerm"].as_u64().unwrap() > 0);
    }

    // Leadership moves to a follower on request.
    let leader_id = leader.as_u64().unwrap();
    let follower_id = statuses
        .iter()
        .map(|s| s["Status"]["header"]["member_id"].as_u64().unwrap())
        .find(|&id| id != leader_id)
        .unwrap();
    let moved = all.ok(&["move-leader", &format!("{follower_id:x}")]);
    assert!(
        moved.contains(&format!(
            "Leadership transferred from {leader_id:x} to {follower_id:x}"
        )),
        "{moved}"
    );
    let statuses = json(&first.ok(&["endpoint", "status", "--cluster", "-w", "json"]));
    for status in statuses.as_array().unwrap() {
        assert_eq!(
            status["Status"]["leader"].as_u64(),
            Some(follower_id),
            "{status}"
        );
    }
    let refused = Etcdctl::new(cluster.endpoint(0)).run(&["move-leader", "1234"], None);
    assert!(
        !refused.ok,
        "moved leadership to a member that does not exist"
    );

    let hashes = json(&first.ok(&["endpoint", "hashkv", "--cluster", "-w", "json"]));
    let hashes = hashes.as_array().unwrap();
    assert_eq!(hashes.len(), 3);
    assert!(
        hashes
            .iter()
            .all(|h| h["HashKV"]["hash"] == hashes[0]["HashKV"]["hash"]),
        "{hashes:?}"
    );

    // A learner joins, catches up and is promoted.
    let joining = cluster.plan_member();
    let peer_url = cluster.specs[joining].peer_url.clone();
    let added = all.ok(&[
        "member",
        "add",
        "m3",
        "--learner",
        &format!("--peer-urls={peer_url}"),
    ]);
    assert!(added.contains("added to cluster"), "{added}");
    let learner_id = member_id_in(added.lines().next().unwrap());
    cluster.join(joining).await.unwrap();
    let learner_line = format!(
        "{learner_id}, started, m3, {peer_url}, {}, true",
        cluster.endpoint(joining)
    );
    eventually_prints(&all, &["member", "list"], &learner_line).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let promoted = all.run(&["member", "promote", &learner_id], None);
        if promoted.ok {
            assert!(
                words(&promoted.stdout).contains(&format!("Member {learner_id} promoted")),
                "{}",
                promoted.stdout
            );
            break;
        }
        assert!(
            promoted.stderr.contains("in sync with leader"),
            "unexpected refusal: {}",
            promoted.stderr
        );
        assert!(Instant::now() < deadline, "learner never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = all.fails(&["member", "promote", &learner_id]);
    assert!(
        refused.contains("can only promote a learner member"),
        "{refused}"
    );

    // Remove the member just promoted; three remain and agree.
    let removed = all.ok(&["member", "remove", &learner_id]);
    assert!(
        words(&removed).contains(&format!("Member {learner_id} removed")),
        "{removed}"
    );
    cluster.kill(joining);
    let list = json(&all.ok(&["member", "list", "-w", "json"]));
    assert_eq!(list["members"].as_array().unwrap().len(), 3);
    let missing = all.fails(&["member", "remove", &learner_id]);
    assert!(missing.contains("member not found"), "{missing}");

    // A backup from one member seeds a new one-member cluster with the same keys.
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("backup.db");
    let saved = first.ok(&["snapshot", "save", backup.to_str().unwrap()]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    let restored_dir = backup_dir.path().join("restored");
    let restore = cairn_snapshot_restore(&backup, &restored_dir);
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let again = cairn_snapshot_restore(&backup, &restored_dir);
    assert!(!again.status.success(), "restore overwrote a member's data");

    let restored = start_cairn(&restored_dir).await.unwrap();
    let fresh = Etcdctl::new(restored.endpoint.clone());
    assert_eq!(
        fresh.ok(&["get", "greeting", "--print-value-only"]),
        "hello\n"
    );
    assert_eq!(fresh.ok(&["put", "after", "restore"]), "OK\n");
    let members = json(&fresh.ok(&["member", "list", "-w", "json"]));
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
}
