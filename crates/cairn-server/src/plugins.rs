//! `cairn.v1.Plugins`: deploy, remove, bind, list and call plugins.
//!
//! Deploys, removals, bindings and writing calls are log entries, applied by every replica at
//! the same index; lists, descriptions and read-only calls read this member's kernel after a
//! linearizable barrier (or at once, for a serializable call).

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_kernel::plugin::{
    Manifest, PluginDeployResponse, PluginLimits, PluginRecord, quoted_prefixes,
};
use cairn_kernel::{
    Command, CommandResponse, PluginBindRequest, PluginCallRequest, PluginDeployRequest,
    PluginRemoveRequest, Revision,
};
use cairn_proto::cairn_v1 as pb;
use cairn_proto::cairn_v1::plugins_server::{Plugins, PluginsServer};
use prost::Message;
use tonic::{Code, Request, Response, Status};

use crate::node::{SharedNode, mismatched};
use crate::status::{invalid_argument, kernel_status, kv_status};

pub struct PluginsService {
    node: SharedNode,
}

impl PluginsService {
    pub fn server(node: SharedNode) -> PluginsServer<PluginsService> {
        PluginsServer::new(PluginsService { node })
            .max_decoding_message_size(cairn_kernel::validate::COMPONENT_BYTES_MAX + (1 << 20))
    }

    async fn revision(&self) -> Revision {
        self.node.replica.kernel().read().await.revision()
    }

    /// A plugin's record from this member's kernel, read linearizably.
    async fn read_records(&self) -> Result<(Vec<PluginRecord>, Revision), Status> {
        self.node.prepare_read(false).await?;
        let kernel = self.node.replica.kernel().read().await;
        Ok((kernel.plugins(), kernel.revision()))
    }
}

#[tonic::async_trait]
impl Plugins for PluginsService {
    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let request = request.into_inner();
        let deployed = deploy_keeping_bindings(
            &self.node,
            PluginDeployRequest {
                name: request.name,
                version: request.version,
                component: request.component,
                manifest: manifest_from_wire(request.manifest.unwrap_or_default()),
                engine: cairn_wasm::engine_name(),
            },
        )
        .await?;
        Ok(Response::new(pb::DeployResponse {
            header: self.node.cairn_header(self.revision().await),
            plugin: Some(info(&deployed.record)),
            replaced: deployed.replaced.unwrap_or_default(),
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let command = Command::PluginRemove(PluginRemoveRequest {
            name: request.into_inner().name,
        });
        match self.node.propose(command).await? {
            CommandResponse::PluginRemove(removed) => Ok(Response::new(pb::RemoveResponse {
                header: self.node.cairn_header(self.revision().await),
                plugin: Some(info(&removed.record)),
            })),
            other => mismatched(&other),
        }
    }

    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let (records, revision) = self.read_records().await?;
        Ok(Response::new(pb::ListResponse {
            header: self.node.cairn_header(revision),
            plugins: records.iter().map(info).collect(),
        }))
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let name = request.into_inner().name;
        let (records, revision) = self.read_records().await?;
        let record = records
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| kv_status(&cairn_kernel::KvError::PluginNotFound(name.clone())))?;
        Ok(Response::new(pb::DescribeResponse {
            header: self.node.cairn_header(revision),
            plugin: Some(info(record)),
        }))
    }

    async fn bind(
        &self,
        request: Request<pb::BindRequest>,
    ) -> Result<Response<pb::BindResponse>, Status> {
        let request = request.into_inner();
        let command = Command::PluginBind(PluginBindRequest {
            name: request.name,
            prefix: request.prefix,
            bound: !request.unbind,
        });
        match self.node.propose(command).await? {
            CommandResponse::PluginBind(bound) => Ok(Response::new(pb::BindResponse {
                header: self.node.cairn_header(self.revision().await),
                plugin: Some(info(&bound.record)),
            })),
            other => mismatched(&other),
        }
    }

    async fn call(
        &self,
        request: Request<pb::CallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let request = request.into_inner();
        let encoded_len = request.encoded_len();
        let input = match request.input {
            None => Vec::new(),
            Some(pb::call_request::Input::Raw(bytes)) => bytes,
            Some(pb::call_request::Input::Json(text)) => {
                serde_json::from_str::<serde::de::IgnoredAny>(&text)
                    .map_err(|e| invalid_argument(format!("the json input does not parse: {e}")))?;
                text.into_bytes()
            }
        };
        let call = PluginCallRequest {
            name: request.plugin,
            function: request.function,
            input,
            caller: String::new(),
            lease: request.lease,
        };
        let called = if request.read_only {
            self.node.prepare_read(request.serializable).await?;
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64);
            // The call may compute for a while: off the async workers, which serve Raft too.
            let kernel = self.node.replica.kernel().clone();
            tokio::task::spawn_blocking(move || {
                kernel.blocking_read().call_read_only(&call, now_ms)
            })
            .await
            .map_err(|e| Status::internal(format!("read-only call: {e}")))?
            .map_err(|e| kernel_status(&e))?
        } else {
            match self
                .node
                .write(encoded_len, Command::PluginCall(call))
                .await?
            {
                CommandResponse::PluginCall(called) => called,
                other => mismatched(&other),
            }
        };
        Ok(Response::new(pb::CallResponse {
            header: self.node.cairn_header(called.revision),
            output: called.output,
            logs: called.logs,
        }))
    }
}

/// Deploys `request` through the log, still bound to every prefix the version it replaces
/// validates: bindings belong to the plugin, not to one version of it, so a `cairn plugin bind`
/// outlives the next deploy, and `cairn plugin bind --unbind` is how a prefix stops being
/// validated. The deployed version is read after a linearizable barrier, so every bind
/// acknowledged before this deploy is kept. The kept prefixes travel in the request itself,
/// so applying a deploy stays a function of the request alone on every member and build.
pub async fn deploy_keeping_bindings(
    node: &SharedNode,
    mut request: PluginDeployRequest,
) -> Result<PluginDeployResponse, Status> {
    node.prepare_read(false).await?;
    let deployed = node.replica.kernel().read().await.plugin(&request.name);
    let kept = keep_bindings(&mut request.manifest, deployed.as_ref());
    let name = request.name.clone();
    match node.propose(Command::PluginDeploy(request)).await {
        Ok(CommandResponse::PluginDeploy(deployed)) => Ok(deployed),
        Ok(other) => mismatched(&other),
        Err(refused) if !kept.is_empty() && refused.code() == Code::InvalidArgument => {
            Err(Status::invalid_argument(format!(
                "{} (the deploy keeps the prefixes {name:?} is bound to, [{}]; `cairn plugin \
                 bind --unbind` unbinds one)",
                refused.message(),
                quoted_prefixes(&kept)
            )))
        }
        Err(failed) => Err(failed),
    }
}

/// Adds to `manifest`'s hooks the prefixes `deployed` validates that it lacks, and returns them.
fn keep_bindings(manifest: &mut Manifest, deployed: Option<&PluginRecord>) -> Vec<Vec<u8>> {
    let kept: Vec<Vec<u8>> = deployed
        .into_iter()
        .flat_map(|deployed| &deployed.manifest.hooks)
        .filter(|hook| !manifest.hooks.contains(hook))
        .cloned()
        .collect();
    manifest.hooks.extend(kept.iter().cloned());
    kept
}

/// A manifest from the wire, with the defaults for limits left at zero.
pub fn manifest_from_wire(manifest: pb::Manifest) -> Manifest {
    let defaults = PluginLimits::default();
    let limits = manifest.limits.unwrap_or_default();
    let or_default = |value: u64, default: u64| if value == 0 { default } else { value };
    Manifest {
        prefixes: manifest.prefixes,
        limits: PluginLimits {
            fuel: or_default(limits.fuel, defaults.fuel),
            memory_bytes: or_default(limits.memory_bytes, defaults.memory_bytes),
            output_bytes: or_default(limits.output_bytes, defaults.output_bytes),
        },
        hooks: manifest.hooks,
    }
}

fn info(record: &PluginRecord) -> pb::PluginInfo {
    pb::PluginInfo {
        name: record.name.clone(),
        version: record.version.clone(),
        digest: record.digest.to_string(),
        size: record.size,
        recipe: record.exports.recipe,
        validator: record.exports.validator,
        manifest: Some(pb::Manifest {
            prefixes: record.manifest.prefixes.clone(),
            limits: Some(pb::PluginLimits {
                fuel: record.manifest.limits.fuel,
                memory_bytes: record.manifest.limits.memory_bytes,
                output_bytes: record.manifest.limits.output_bytes,
            }),
            hooks: record.manifest.hooks.clone(),
        }),
        deployed_index: record.deployed_index,
        engine: record.engine.clone(),
    }
}

#[cfg(test)]
mod tests {
    use cairn_kernel::plugin::{Digest, Exports};

    use super::*;

    fn hooks(prefixes: &[&str]) -> Vec<Vec<u8>> {
        prefixes.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_deploy_keeps_the_prefixes_the_deployed_version_is_bound_to() {
        let deployed = PluginRecord {
            name: "json".into(),
            version: "1".into(),
            digest: Digest::of(b"v1"),
            size: 2,
            exports: Exports {
                recipe: false,
                validator: true,
            },
            manifest: Manifest {
                hooks: hooks(&["config/", "schemas/"]),
                ..Manifest::default()
            },
            deployed_index: 3,
            engine: "wasmtime".into(),
        };
        let mut manifest = Manifest {
            hooks: hooks(&["schemas/", "users/"]),
            ..Manifest::default()
        };
        assert_eq!(
            keep_bindings(&mut manifest, Some(&deployed)),
            hooks(&["config/"])
        );
        assert_eq!(manifest.hooks, hooks(&["schemas/", "users/", "config/"]));

        let mut first = Manifest {
            hooks: hooks(&["users/"]),
            ..Manifest::default()
        };
        assert!(keep_bindings(&mut first, None).is_empty());
        assert_eq!(first.hooks, hooks(&["users/"]));
    }
}
