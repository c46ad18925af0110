//! Keeps the plugins built into the binary (`cairn-bundled`: lock, election, discovery, queue,
//! schema) deployed.
//!
//! The leader deploys each bundled plugin at start if the cluster has no plugin of that name,
//! and a recipe service that finds its plugin missing deploys it before going on, so the etcd
//! lock and election services work on a new cluster without any set-up. A plugin of the same
//! name that is already deployed is left alone, whatever its version: users may replace a
//! bundled plugin with their own, and members of different builds must not undo each other's
//! deploys during a rolling upgrade. `cairn plugin deploy` upgrades a bundled plugin by hand.

use std::path::Path;
use std::time::Duration;

use cairn_bundled::BundledPlugin;
use cairn_kernel::{Command, PluginDeployRequest};
use tokio::sync::watch;
use tonic::Status;

use crate::manifest_file::ManifestFile;
use crate::node::SharedNode;
use crate::plugins::manifest_from_wire;

/// Pause between looks at the cluster while the bundled plugins are not all deployed.
const RETRY: Duration = Duration::from_millis(500);

/// Deploys every bundled plugin the cluster lacks, retrying until each is there or `stopped`
/// turns true. Only the leader proposes: a component is a large entry, and every member
/// proposing the same ones at once would put each in the log once per member, while the cluster
/// is just starting. The others wait until they have applied the leader's deploys, and take over
/// if they come to lead first.
pub async fn deploy_missing(node: SharedNode, mut stopped: watch::Receiver<bool>) {
    for plugin in cairn_bundled::ALL {
        loop {
            if node.leads() {
                match ensure_deployed(&node, plugin).await {
                    Ok(()) => break,
                    Err(status) => {
                        tracing::debug!(plugin = plugin.name, reason = %status.message(), "bundled plugin not deployed yet; trying again");
                    }
                }
            } else if node
                .replica
                .kernel()
                .read()
                .await
                .plugin(plugin.name)
                .is_some()
            {
                break;
            }
            tokio::select! {
                _ = stopped.changed() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

/// Deploys `plugin` unless a plugin of its name is deployed, as far as a linearizable read of
/// this member tells.
pub async fn ensure_deployed(node: &SharedNode, plugin: &BundledPlugin) -> Result<(), Status> {
    node.prepare_read(false).await?;
    if node
        .replica
        .kernel()
        .read()
        .await
        .plugin(plugin.name)
        .is_some()
    {
        return Ok(());
    }
    node.propose(Command::PluginDeploy(deploy_request(plugin)))
        .await?;
    tracing::info!(
        plugin = plugin.name,
        version = plugin.version,
        "deployed the bundled plugin"
    );
    Ok(())
}

fn deploy_request(plugin: &BundledPlugin) -> PluginDeployRequest {
    let origin = Path::new("bundled").join(format!("{}.toml", plugin.name));
    let manifest = ManifestFile::parse(plugin.manifest, &origin)
        .unwrap_or_else(|error| panic!("the bundled manifest does not parse: {error}"));
    PluginDeployRequest {
        name: plugin.name.to_string(),
        version: plugin.version.to_string(),
        component: plugin.component.to_vec(),
        manifest: manifest_from_wire(manifest.to_wire()),
        engine: cairn_wasm::engine_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_plugin_has_a_manifest_that_parses_and_a_component() {
        for plugin in cairn_bundled::ALL {
            let request = deploy_request(plugin);
            assert_eq!(request.name, plugin.name);
            assert!(!request.manifest.prefixes.is_empty(), "{}", plugin.name);
            assert!(request.component.starts_with(b"\0asm"), "{}", plugin.name);
        }
    }
}
