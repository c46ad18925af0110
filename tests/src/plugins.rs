//! Plugins for tests: the components `make plugins` builds, and a client for the plugin API.

use std::path::PathBuf;

use cairn_proto::cairn_v1 as pb;
use cairn_proto::cairn_v1::plugins_client::PluginsClient;
use tonic::transport::Channel;

/// The component `make plugins` built from package `name` (e.g. "counter", "hostile-loop"):
/// `$CAIRN_TEST_COMPONENTS/<name>.wasm`, by default in the cargo target directory's `plugins/`.
/// Not `CAIRN_PLUGIN_DIR`: the servers tests start inherit their environment and would take that
/// as `--plugin-dir`.
pub fn component(name: &str) -> Vec<u8> {
    let dir = match std::env::var_os("CAIRN_TEST_COMPONENTS") {
        Some(dir) => PathBuf::from(dir),
        None => crate::cairn_binary()
            .parent()
            .and_then(|release| release.parent())
            .expect("the cairn binary lives in <target>/release")
            .join("plugins"),
    };
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; build the plugins first (`make plugins`) or set CAIRN_TEST_COMPONENTS",
            path.display()
        )
    })
}

/// A plugin API client of the member at `endpoint` (a client URL, as `Cluster::endpoint` gives).
pub async fn client(endpoint: &str) -> anyhow::Result<PluginsClient<Channel>> {
    Ok(PluginsClient::connect(endpoint.to_string())
        .await?
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// A manifest granting `prefixes`, with the server's default limits.
pub fn manifest(prefixes: &[&str]) -> pb::Manifest {
    pb::Manifest {
        prefixes: prefixes.iter().map(|p| p.as_bytes().to_vec()).collect(),
        ..pb::Manifest::default()
    }
}

/// Deploys component `package` as plugin `name` with `manifest`.
pub async fn deploy(
    client: &mut PluginsClient<Channel>,
    name: &str,
    package: &str,
    manifest: pb::Manifest,
) -> Result<pb::DeployResponse, tonic::Status> {
    client
        .deploy(pb::DeployRequest {
            name: name.to_string(),
            version: "1".to_string(),
            component: component(package),
            manifest: Some(manifest),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Calls `function` of plugin `name` with raw `input`, through the log.
pub async fn call(
    client: &mut PluginsClient<Channel>,
    name: &str,
    function: &str,
    input: &[u8],
) -> Result<pb::CallResponse, tonic::Status> {
    client
        .call(pb::CallRequest {
            plugin: name.to_string(),
            function: function.to_string(),
            input: Some(pb::call_request::Input::Raw(input.to_vec())),
            ..pb::CallRequest::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The plugins every cairn binary carries and deploys at start.
pub const BUNDLED: &[&str] = &["lock", "election", "discovery", "queue", "schema"];

/// Waits until the cluster behind `endpoint` has deployed plugin `name` (the servers deploy
/// their bundled plugins at start).
pub async fn wait_deployed(endpoint: &str, name: &str) {
    let mut plugins = client(endpoint).await.unwrap();
    crate::eventually(&format!("plugin {name} is deployed"), async || {
        plugins
            .describe(pb::DescribeRequest {
                name: name.to_string(),
            })
            .await
            .is_ok()
    })
    .await;
}
