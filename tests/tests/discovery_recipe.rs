//! The bundled service discovery on a three-member cluster: instances registered through
//! cairn-client and `cairn svc`, listed with filters, watched as a stream, and gone within
//! TTL + 1 s of their process being killed.

use std::time::{Duration, Instant};

use cairn_client::Client;
use cairn_client::discovery::{Change, Filter, Health, Instance};
use cairn_tests::cairn_binary;
use cairn_tests::cluster::Cluster;
use cairn_tests::plugins::wait_deployed;
use tokio::io::AsyncBufReadExt;
use tokio_stream::StreamExt;

/// Long enough that keep-alives get through while the whole test suite loads the machine.
const TTL: i64 = 5;

fn instance(id: &str, port: u16, tags: &[&str]) -> Instance {
    Instance {
        service: "api".to_string(),
        id: id.to_string(),
        address: "10.0.0.1".to_string(),
        port,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        metadata: [("zone".to_string(), "eu-1".to_string())].into(),
        health: Health::Passing,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_register_list_by_tag_and_health_and_deregister() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    wait_deployed(cluster.endpoint(0), "discovery").await;
    let client = Client::connect(cluster.endpoint(0)).await.unwrap();
    let reader = Client::connect(cluster.endpoint(2)).await.unwrap();

    let a = client
        .register(instance("a", 8080, &["v1"]), 30)
        .await
        .unwrap();
    let mut b = client
        .register(instance("b", 8081, &["v1", "canary"]), 30)
        .await
        .unwrap();
    let _other = client
        .register(
            Instance {
                service: "db".to_string(),
                ..instance("d", 5432, &[])
            },
            30,
        )
        .await
        .unwrap();

    let all = reader.instances("api", &Filter::default()).await.unwrap();
    assert_eq!(
        all,
        vec![
            instance("a", 8080, &["v1"]),
            instance("b", 8081, &["v1", "canary"])
        ]
    );
    let canaries = Filter {
        tag: Some("canary".to_string()),
        health: None,
    };
    let ids = |instances: Vec<Instance>| instances.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(
        ids(reader.instances("api", &canaries).await.unwrap()),
        ["b"]
    );

    b.set_health(Health::Critical).await.unwrap();
    let passing = Filter {
        tag: None,
        health: Some(Health::Passing),
    };
    assert_eq!(ids(reader.instances("api", &passing).await.unwrap()), ["a"]);
    assert_eq!(reader.services().await.unwrap(), ["api", "db"]);

    a.deregister().await.unwrap();
    assert_eq!(
        ids(reader.instances("api", &Filter::default()).await.unwrap()),
        ["b"]
    );
    assert!(!client.deregister("api", "a").await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_instance_leaves_within_ttl_and_a_second_and_watchers_see_it() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    wait_deployed(cluster.endpoint(0), "discovery").await;
    let watcher = Client::connect(cluster.endpoint(1)).await.unwrap();
    let (initial, mut changes) = watcher.watch_service("web").await.unwrap();
    assert!(initial.is_empty());

    let mut process = tokio::process::Command::new(cairn_binary())
        .args([
            "svc",
            "register",
            "--ttl",
            &TTL.to_string(),
            "--tag",
            "blue",
        ])
        .args(["--endpoints", cluster.endpoint(0)])
        .args(["web", "web-1", "127.0.0.1:9000"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(process.stdout.take().unwrap()).lines();
    let key = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("cairn svc register printed its key")
        .unwrap()
        .unwrap();
    assert_eq!(key, "services/web/web-1");

    let Some(Ok(Change::Up(up))) = changes.next().await else {
        panic!("the watcher did not see the registration");
    };
    assert_eq!(
        (up.id.as_str(), up.port, up.tags.as_slice()),
        ("web-1", 9000, &["blue".to_string()][..])
    );

    // Alive past its TTL: the keep-alives work.
    tokio::time::sleep(Duration::from_secs(TTL as u64 + 1)).await;
    let listed = watcher.instances("web", &Filter::default()).await.unwrap();
    assert_eq!(listed.len(), 1, "a kept-alive instance disappeared");

    process.start_kill().unwrap();
    let killed = Instant::now();
    process.wait().await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(30), changes.next())
        .await
        .expect("the watcher heard of the killed instance");
    let gone_after = killed.elapsed();
    assert!(
        matches!(&change, Some(Ok(Change::Down { id })) if id == "web-1"),
        "{change:?}"
    );
    assert!(
        gone_after <= Duration::from_secs(TTL as u64 + 1),
        "the killed instance stayed {gone_after:?}"
    );
    assert!(
        watcher
            .instances("web", &Filter::default())
            .await
            .unwrap()
            .is_empty()
    );
}
