//! Plugins on a three-member cluster of real processes: concurrent calls through every member
//! apply once each, in one order, on every replica; and `--plugin-dir` deploys a new version on
//! every replica at one log index, while a corrupt file changes nothing.

use std::collections::BTreeSet;
use std::path::Path;

use cairn_proto::cairn_v1 as pb;
use cairn_tests::cluster::Cluster;
use cairn_tests::eventually;
use cairn_tests::plugins::{call, client, component, deploy, manifest};
use tokio::task::JoinSet;

const CALLS: usize = 1_000;
const CALLERS: usize = 48;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_incr_calls_through_every_member_count_once_each() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    let mut admin = client(cluster.endpoint(0)).await.unwrap();
    deploy(&mut admin, "counter", "counter", manifest(&["counters/"]))
        .await
        .unwrap();

    let mut callers = JoinSet::new();
    for caller in 0..CALLERS {
        let endpoint = cluster.endpoint(caller % cluster.size()).to_string();
        let share = CALLS / CALLERS + usize::from(caller < CALLS % CALLERS);
        callers.spawn(async move {
            let mut client = client(&endpoint).await.unwrap();
            let mut values = Vec::new();
            for _ in 0..share {
                let response = call(&mut client, "counter", "incr", b"counters/hits")
                    .await
                    .unwrap();
                values.push(String::from_utf8(response.output).unwrap());
            }
            values
        });
    }
    let mut values = BTreeSet::new();
    for values_of_one in callers.join_all().await {
        for value in values_of_one {
            assert!(
                values.insert(value.parse::<u64>().unwrap()),
                "{value} twice"
            );
        }
    }
    assert_eq!(values, (1..=CALLS as u64).collect::<BTreeSet<_>>());

    cluster.converged().await.unwrap();
    for i in 0..cluster.size() {
        let mut member = client(cluster.endpoint(i)).await.unwrap();
        let current = member
            .call(pb::CallRequest {
                plugin: "counter".into(),
                function: "get".into(),
                input: Some(pb::call_request::Input::Raw(b"counters/hits".to_vec())),
                read_only: true,
                serializable: true,
                lease: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(current.output, CALLS.to_string().into_bytes(), "member {i}");
    }
}

/// Each member's view of plugin `name`: (version, digest, deployed index).
async fn deployed_everywhere(cluster: &Cluster, name: &str) -> Vec<Option<(String, String, u64)>> {
    let mut views = Vec::new();
    for i in 0..cluster.size() {
        let mut member = client(cluster.endpoint(i)).await.unwrap();
        let listed = member.list(pb::ListRequest {}).await.unwrap().into_inner();
        views.push(
            listed
                .plugins
                .into_iter()
                .find(|p| p.name == name)
                .map(|p| (p.version, p.digest, p.deployed_index)),
        );
    }
    views
}

/// Waits until every member holds the same deploy of `name` at `version`; returns it.
async fn settled(cluster: &Cluster, name: &str, version: &str) -> (String, String, u64) {
    let mut agreed = None;
    eventually(&format!("every member runs {name} {version}"), async || {
        let views = deployed_everywhere(cluster, name).await;
        let first = views[0].clone();
        let all_same = views.iter().all(|view| view == &first);
        agreed = first.filter(|(v, _, _)| all_same && v == version);
        agreed.is_some()
    })
    .await;
    agreed.unwrap()
}

fn install(dir: &Path, name: &str, component: &[u8], version: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("version = \"{version}\"\nprefixes = [\"counters/\"]\n"),
    )
    .unwrap();
    // Written aside and renamed, as a deploy tool would, so the watcher never reads half a file.
    let partial = dir.join(format!("{name}.partial"));
    std::fs::write(&partial, component).unwrap();
    std::fs::rename(&partial, dir.join(format!("{name}.wasm"))).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_dir_deploys_new_versions_everywhere_and_refuses_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().to_str().unwrap();
    let cluster = Cluster::start(3, &["--plugin-dir", flag]).await.unwrap();

    install(dir.path(), "counter", &component("counter"), "1.0.0");
    let (_, v1_digest, v1_index) = settled(&cluster, "counter", "1.0.0").await;
    let mut first = client(cluster.endpoint(1)).await.unwrap();
    let one = call(&mut first, "counter", "incr", b"counters/reload")
        .await
        .unwrap();
    assert_eq!(one.output, b"1");

    // Version 2 is a different component under the same name: hostile-float's `nan` exists
    // only in it, so calls show which version each member runs.
    install(dir.path(), "counter", &component("hostile-float"), "2.0.0");
    let (_, v2_digest, v2_index) = settled(&cluster, "counter", "2.0.0").await;
    assert_ne!(v1_digest, v2_digest);
    assert!(v2_index > v1_index, "v2 at {v2_index}, v1 at {v1_index}");
    let mut outputs = Vec::new();
    for i in 0..cluster.size() {
        let mut member = client(cluster.endpoint(i)).await.unwrap();
        outputs.push(
            call(&mut member, "counter", "nan", b"")
                .await
                .unwrap()
                .output,
        );
    }
    assert!(
        outputs
            .iter()
            .all(|output| output == &outputs[0] && !output.is_empty())
    );

    std::fs::write(dir.path().join("counter.wasm"), b"\0asm but not really").unwrap();
    // Members that do not lead deploy a change only after leaving it to the leader for a while;
    // once every member has refused the corrupt file, none has version 2 left to deploy.
    eventually("every member reports the corrupt component", async || {
        (0..cluster.size()).all(|i| cluster.log_text(i).contains("plugin refused"))
    })
    .await;
    let deploys_of_v2: usize = (0..cluster.size())
        .map(|i| {
            let log = cluster.log_text(i);
            log.lines()
                .filter(|line| line.contains("deployed from the plugin directory"))
                .filter(|line| line.contains("2.0.0"))
                .count()
        })
        .sum();
    assert_eq!(deploys_of_v2, 1, "one change of the files, one deploy");
    let views = deployed_everywhere(&cluster, "counter").await;
    for view in &views {
        let (version, digest, index) = view.clone().unwrap();
        assert_eq!(
            (version.as_str(), &digest, index),
            ("2.0.0", &v2_digest, v2_index)
        );
    }
    let mut member = client(cluster.endpoint(2)).await.unwrap();
    assert!(call(&mut member, "counter", "nan", b"").await.is_ok());
    cluster.converged().await.unwrap();
}
