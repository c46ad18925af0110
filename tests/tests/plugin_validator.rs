//! A JSON validator bound to `config/` on a three-member cluster of real processes, driven by
//! Debian's etcdctl: valid writes pass; invalid ones through a put, a Txn or a plugin call are
//! refused with the validator's reason and change nothing on any member; deletes pass; and once
//! unbound the validator no longer stands in the way.

use cairn_proto::cairn_v1 as pb;
use cairn_proto::cairn_v1::plugins_client::PluginsClient;
use cairn_tests::cluster::Cluster;
use cairn_tests::etcdctl::Etcdctl;
use cairn_tests::plugins::{call, client, deploy, manifest};
use tonic::Code;
use tonic::transport::Channel;

const VALIDATOR: &str = "json";
const PREFIX: &str = "config/";

#[tokio::test(flavor = "multi_thread")]
async fn a_json_validator_guards_its_prefix_against_every_kind_of_write() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let follower = (leader + 1) % cluster.size();
    let mut admin = client(cluster.endpoint(follower)).await.unwrap();
    deploy(&mut admin, VALIDATOR, "json-validator", manifest(&[PREFIX]))
        .await
        .unwrap();
    let bound = bind(&mut admin, false).await;
    assert_eq!(bound.manifest.unwrap().hooks, [PREFIX.as_bytes()]);

    let ctl = Etcdctl::new(cluster.endpoint(follower));
    assert_eq!(ctl.ok(&["put", "config/a", r#"{"x":1}"#]), "OK\n");
    assert_eq!(ctl.ok(&["put", "other/a", "not json"]), "OK\n");

    an_invalid_put_is_refused_through_every_member(&cluster).await;
    a_txn_with_one_invalid_put_is_refused_whole(&cluster, &Etcdctl::new(cluster.endpoint(leader)))
        .await;
    a_plugin_write_is_validated_too(&cluster).await;
    assert_eq!(
        config_on_every_member(&cluster).await,
        "config/a\n{\"x\":1}\n"
    );

    assert_eq!(ctl.ok(&["del", "config/a"]), "1\n");
    assert_eq!(config_on_every_member(&cluster).await, "");

    a_redeploy_keeps_the_binding(&cluster, &mut admin).await;

    let unbound = bind(&mut admin, true).await;
    assert!(unbound.manifest.unwrap().hooks.is_empty());
    assert_eq!(ctl.ok(&["put", "config/b", "not json"]), "OK\n");
    assert_eq!(
        config_on_every_member(&cluster).await,
        "config/b\nnot json\n"
    );
}

/// Binds the validator to [`PREFIX`], or unbinds it; returns its record after.
async fn bind(admin: &mut PluginsClient<Channel>, unbind: bool) -> pb::PluginInfo {
    admin
        .bind(pb::BindRequest {
            name: VALIDATOR.into(),
            prefix: PREFIX.into(),
            unbind,
        })
        .await
        .unwrap()
        .into_inner()
        .plugin
        .unwrap()
}

/// A new version of the validator, deployed with a manifest that binds nothing, still validates
/// the prefix its predecessor was bound to; a component that cannot validate is refused while
/// it is bound, and the version that can keeps serving.
async fn a_redeploy_keeps_the_binding(cluster: &Cluster, admin: &mut PluginsClient<Channel>) {
    let redeployed = deploy(admin, VALIDATOR, "json-validator", manifest(&[PREFIX]))
        .await
        .unwrap();
    assert_eq!(redeployed.replaced, "1");
    assert_eq!(
        redeployed.plugin.unwrap().manifest.unwrap().hooks,
        [PREFIX.as_bytes()]
    );
    an_invalid_put_is_refused_through_every_member(cluster).await;

    let refused = deploy(admin, VALIDATOR, "noop", manifest(&[PREFIX]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("cairn:plugin/validator")
            && refused.message().contains(r#"["config/"]"#)
            && refused.message().contains("bind --unbind"),
        "{}",
        refused.message()
    );
    an_invalid_put_is_refused_through_every_member(cluster).await;
}

/// Validators run in apply, so each member, leader or not, must answer the same refusal.
async fn an_invalid_put_is_refused_through_every_member(cluster: &Cluster) {
    for i in 0..cluster.size() {
        let before = cluster.converged().await.unwrap();
        let refused = Etcdctl::new(cluster.endpoint(i)).fails(&["put", "config/b", "not json"]);
        assert!(
            refused.contains("code = FailedPrecondition")
                && refused.contains("rejected by validator \"json\"")
                && refused.contains("config/b: value is not a JSON object"),
            "member {i}: {refused}"
        );
        unchanged(cluster, before).await;
    }
}

/// A Txn commits all of its writes or none: one invalid put sinks the valid one beside it.
async fn a_txn_with_one_invalid_put_is_refused_whole(cluster: &Cluster, ctl: &Etcdctl) {
    let before = cluster.converged().await.unwrap();
    // No compares, so the success branch runs: a valid put and an invalid one.
    let txn = ctl.run(
        &["txn"],
        Some("\nput config/c \"{\\\"y\\\":2}\"\nput config/d \"not json\"\n\n\n"),
    );
    assert!(!txn.ok, "the txn passed: {}", txn.stdout);
    // The validator sees the writes in key order, so naming config/d shows it passed config/c.
    assert!(
        txn.stderr.contains("code = FailedPrecondition")
            && txn.stderr.contains("config/d: value is not a JSON object"),
        "{}",
        txn.stderr
    );
    unchanged(cluster, before).await;
}

/// The counter plugin writes decimal numbers: JSON, but not objects.
async fn a_plugin_write_is_validated_too(cluster: &Cluster) {
    let mut member = client(cluster.endpoint(2)).await.unwrap();
    deploy(&mut member, "counter", "counter", manifest(&[PREFIX]))
        .await
        .unwrap();
    let before = cluster.converged().await.unwrap();
    let refused = call(&mut member, "counter", "incr", b"config/n")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("rejected by validator \"json\": config/n: value is not a JSON object"),
        "{refused:?}"
    );
    unchanged(cluster, before).await;
}

/// Checks that a refused request, now applied by every member, left each with the revision and
/// hash of `before`.
async fn unchanged(cluster: &Cluster, before: (u32, i64)) {
    cluster.all_applied().await.unwrap();
    assert_eq!(cluster.converged().await.unwrap(), before);
}

/// What `etcdctl get --prefix config/` prints on each member, read from its own store; the
/// same on every member.
async fn config_on_every_member(cluster: &Cluster) -> String {
    cluster.converged().await.unwrap();
    let listings: Vec<String> = (0..cluster.size())
        .map(|i| {
            Etcdctl::new(cluster.endpoint(i)).ok(&["get", "--prefix", PREFIX, "--consistency=s"])
        })
        .collect();
    assert!(listings.iter().all(|l| l == &listings[0]), "{listings:?}");
    listings[0].clone()
}
