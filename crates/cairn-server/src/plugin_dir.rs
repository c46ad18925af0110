//! `--plugin-dir`: keeps the plugins of a directory deployed.
//!
//! Each `NAME.wasm` in the directory, with its manifest in `NAME.toml` when there is one, is
//! deployed as plugin `NAME` through the log when it first differs from the deployed plugin and
//! whenever the files change after that, so a new version dropped into the directory goes live
//! on every replica at the same log index. Acting on changes of the files, not on every
//! difference, leaves alone what an operator did since (`cairn plugin bind`, `rm`, a deploy by
//! hand), and keeps members whose directories are out of step from undoing each other. A deploy
//! keeps the prefixes the plugin is bound to, so prefixes bound since are no difference; a
//! prefix the manifest lists and an operator unbound is, and a member starting binds it again.
//! A file the cluster refuses (not a component, a forbidden import, a bad manifest) is reported
//! once and the deployed version keeps serving. Deleting a file removes nothing.
//!
//! Members usually hold the same files, or share one directory, and see a change together. The
//! leader deploys at once; a member that does not lead leaves the change to it for
//! [`LEADER_FIRST`], then deploys only if nobody deployed or removed the plugin meanwhile (the
//! leader, or an operator), so a change makes one deploy rather than one per member. Members
//! that see a change while nobody leads, as at start, each wait, and may each deploy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_kernel::PluginDeployRequest;
use cairn_kernel::plugin::{Digest, PluginRecord};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tonic::Code;

use crate::manifest_file::ManifestFile;
use crate::node::SharedNode;
use crate::plugins::{deploy_keeping_bindings, manifest_from_wire};

/// How long the directory must be quiet before it is read: a copy in progress fires many events.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the directory is read even without events, so that a deploy that failed for want of
/// a leader is tried again.
const RESCAN: Duration = Duration::from_secs(5);
/// How long a member that does not lead waits for the leader to deploy a change it sees. Passes
/// over the directory are at most [`RESCAN`] apart, so it looks again within that much after.
const LEADER_FIRST: Duration = RESCAN;

/// Watches `dir` until `stopped` turns true.
pub async fn keep_deployed(node: SharedNode, dir: PathBuf, mut stopped: watch::Receiver<bool>) {
    let (changed, mut changes) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |_event| {
        let _ = changed.try_send(());
    })
    .and_then(|mut watcher| {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    let _watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::error!(dir = %dir.display(), %error, "cannot watch the plugin directory; reading it every {RESCAN:?}");
            None
        }
    };
    let mut progress = Progress::default();
    loop {
        sync(&node, &dir, &mut progress).await;
        tokio::select! {
            _ = stopped.changed() => return,
            _ = changes.recv() => {
                tokio::time::sleep(SETTLE).await;
                while changes.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
}

/// One plugin as the directory holds it.
struct Candidate {
    request: PluginDeployRequest,
    /// Identifies the file and its manifest, so a pair already handled is left alone.
    identity: Digest,
}

/// Files seen to differ from the deployed plugin while another member led.
struct Seen {
    identity: Digest,
    at: Instant,
    /// The log index of the plugin's deploy then, if it was deployed.
    deployed_index: Option<u64>,
}

/// What this member has done about each plugin's files.
#[derive(Default)]
struct Progress {
    /// The files as last deployed, found deployed, refused, or left alone.
    handled: HashMap<String, Digest>,
    /// Files that differ from the deployed plugin, seen while another member led.
    left_to_leader: HashMap<String, Seen>,
}

impl Progress {
    /// Whether the files `identity` names were handled already; if so, nothing of the plugin's
    /// is left to the leader.
    fn was_handled(&mut self, name: &str, identity: &Digest) -> bool {
        let handled = self.handled.get(name) == Some(identity);
        if handled {
            self.left_to_leader.remove(name);
        }
        handled
    }

    /// Records the files `identity` names as handled.
    fn handle(&mut self, name: String, identity: Digest) {
        self.left_to_leader.remove(&name);
        self.handled.insert(name, identity);
    }
}

/// Deploys what changed in `dir` since `progress` last handled it; unless this member leads,
/// only files left to the leader for [`LEADER_FIRST`].
async fn sync(node: &SharedNode, dir: &Path, progress: &mut Progress) {
    let candidates = match read_dir(dir) {
        Ok(candidates) => candidates,
        Err(error) => {
            tracing::error!(dir = %dir.display(), %error, "cannot read the plugin directory");
            return;
        }
    };
    for candidate in candidates {
        let candidate = match candidate {
            Ok(candidate) => candidate,
            Err(reason) => {
                tracing::error!(dir = %dir.display(), "plugin not deployed: {reason}");
                continue;
            }
        };
        let name = candidate.request.name.clone();
        if progress.was_handled(&name, &candidate.identity) {
            continue;
        }
        let deployed = node.replica.kernel().read().await.plugin(&name);
        let request = &candidate.request;
        if deployed
            .as_ref()
            .is_some_and(|deployed| already_deployed(deployed, request))
        {
            progress.handle(name, candidate.identity);
            continue;
        }
        if !node.leads() {
            let left_to_leader = &mut progress.left_to_leader;
            match after_the_leader(node, &candidate, deployed.as_ref(), left_to_leader).await {
                Turn::Wait => continue,
                Turn::Leave => {
                    progress.handle(name, candidate.identity);
                    continue;
                }
                Turn::Deploy => {}
            }
        }
        match deploy_keeping_bindings(node, candidate.request.clone()).await {
            Ok(_) => {
                progress.handle(name.clone(), candidate.identity);
                tracing::info!(plugin = %name, version = %request.version, "deployed from the plugin directory");
            }
            Err(status) if status.code() == Code::InvalidArgument => {
                tracing::error!(plugin = %name, reason = %status.message(), "plugin refused; the deployed version, if any, keeps serving");
                progress.handle(name, candidate.identity);
            }
            Err(status) => {
                // Still left to the leader long enough: the next pass tries again at once.
                tracing::warn!(plugin = %name, reason = %status.message(), "deploy failed; trying again");
            }
        }
    }
}

/// What a member that does not lead does with files that differ from the deployed plugin.
enum Turn {
    /// Leave them to the leader for now.
    Wait,
    /// Deploy them: nobody did anything about the plugin since they changed.
    Deploy,
    /// Leave the plugin as it is: it was deployed or removed since the files changed, by the
    /// leader or an operator.
    Leave,
}

/// The turn of `candidate` on a member that does not lead: [`Turn::Wait`] until it has differed
/// for [`LEADER_FIRST`], then, read after a linearizable barrier, whether the plugin is still
/// deployed as it was when the files were first seen to differ (`deployed` then).
async fn after_the_leader(
    node: &SharedNode,
    candidate: &Candidate,
    deployed: Option<&PluginRecord>,
    left_to_leader: &mut HashMap<String, Seen>,
) -> Turn {
    let name = &candidate.request.name;
    let (at, deployed_index) = match left_to_leader.get(name) {
        Some(seen) if seen.identity == candidate.identity => (seen.at, seen.deployed_index),
        _ => {
            let seen = Seen {
                identity: candidate.identity,
                at: Instant::now(),
                deployed_index: deployed.map(|deployed| deployed.deployed_index),
            };
            left_to_leader.insert(name.clone(), seen);
            return Turn::Wait;
        }
    };
    if at.elapsed() < LEADER_FIRST || node.prepare_read(false).await.is_err() {
        return Turn::Wait;
    }
    let now = node.replica.kernel().read().await.plugin(name);
    if now
        .as_ref()
        .is_some_and(|now| already_deployed(now, &candidate.request))
    {
        return Turn::Leave;
    }
    if now.map(|now| now.deployed_index) != deployed_index {
        tracing::info!(plugin = %name, "the plugin was deployed or removed since its files changed; leaving it as it is");
        return Turn::Leave;
    }
    Turn::Deploy
}

/// Whether deploying `request` would leave `deployed` as it is. A deploy keeps the prefixes the
/// deployed version validates, so prefixes bound since are no difference.
fn already_deployed(deployed: &PluginRecord, request: &PluginDeployRequest) -> bool {
    let (have, want) = (&deployed.manifest, &request.manifest);
    deployed.digest == Digest::of(&request.component)
        && deployed.version == request.version
        && have.prefixes == want.prefixes
        && have.limits == want.limits
        && want.hooks.iter().all(|hook| have.hooks.contains(hook))
}

fn read_dir(dir: &Path) -> std::io::Result<Vec<Result<Candidate, String>>> {
    let mut components: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    components.sort();
    Ok(components.iter().map(|path| candidate(path)).collect())
}

fn candidate(path: &Path) -> Result<Candidate, String> {
    let name = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .ok_or_else(|| format!("{}: the file name is not UTF-8", path.display()))?
        .to_string();
    let component =
        std::fs::read(path).map_err(|error| format!("reading {}: {error}", path.display()))?;
    let manifest_path = path.with_extension("toml");
    let (manifest, manifest_text) = if manifest_path.exists() {
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|error| format!("reading {}: {error}", manifest_path.display()))?;
        let manifest = ManifestFile::parse(&text, &manifest_path).map_err(|e| e.to_string())?;
        (manifest, text.into_bytes())
    } else {
        (ManifestFile::default(), Vec::new())
    };
    let digest = Digest::of(&component);
    let version = manifest
        .version
        .clone()
        .unwrap_or_else(|| digest.to_hex()[..12].to_string());
    let mut identity = component.clone();
    identity.extend_from_slice(&manifest_text);
    Ok(Candidate {
        identity: Digest::of(&identity),
        request: PluginDeployRequest {
            name,
            version,
            component,
            manifest: manifest_from_wire(manifest.to_wire()),
            engine: cairn_wasm::engine_name(),
        },
    })
}

#[cfg(test)]
mod tests {
    use cairn_kernel::plugin::{Exports, Manifest};

    use super::*;

    fn request(version: &str, hooks: &[&str]) -> PluginDeployRequest {
        PluginDeployRequest {
            name: "json".into(),
            version: version.into(),
            component: b"component".to_vec(),
            manifest: Manifest {
                prefixes: vec![b"config/".to_vec()],
                hooks: hooks.iter().map(|hook| hook.as_bytes().to_vec()).collect(),
                ..Manifest::default()
            },
            engine: "wasmtime".into(),
        }
    }

    fn deployed(hooks: &[&str]) -> PluginRecord {
        let request = request("1", hooks);
        PluginRecord {
            name: request.name,
            version: request.version,
            digest: Digest::of(&request.component),
            size: request.component.len() as u64,
            exports: Exports {
                recipe: false,
                validator: true,
            },
            manifest: request.manifest,
            deployed_index: 7,
            engine: request.engine,
        }
    }

    #[test]
    fn prefixes_bound_since_the_files_were_deployed_are_no_reason_to_deploy_them_again() {
        let bound_since = deployed(&["config/", "schemas/"]);
        assert!(already_deployed(&bound_since, &request("1", &["config/"])));
        assert!(already_deployed(&bound_since, &request("1", &[])));
        assert!(!already_deployed(
            &deployed(&[]),
            &request("1", &["config/"])
        ));
        assert!(!already_deployed(&bound_since, &request("2", &["config/"])));
        let mut other_component = request("1", &["config/"]);
        other_component.component = b"another".to_vec();
        assert!(!already_deployed(&bound_since, &other_component));
    }
}
