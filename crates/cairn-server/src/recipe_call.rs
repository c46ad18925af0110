//! Calls of the bundled recipe plugins, for the services that front them (etcd's v3lock and
//! v3election, `cairn.v1.Locks`).
//!
//! A call is an ordinary plugin call through the log, with JSON in and out. A plugin found
//! missing is deployed from the binary and the call made again, so the services work from a
//! cluster's first moment, and after an operator removed the plugin.

use std::future::Future;
use std::pin::Pin;

use cairn_bundled::BundledPlugin;
use cairn_kernel::{
    Command, CommandResponse, KvError, PluginCallRequest, PluginFailureKind, Revision,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use tonic::Status;

use crate::bundled;
use crate::node::{SharedNode, mismatched};
use crate::status::kv_status;

/// What a recipe call gave back.
pub struct Called<T> {
    pub output: T,
    /// The store revision after the call.
    pub revision: Revision,
}

/// Calls `function` of `plugin` with `input`. A reason the plugin returned goes to `refused`,
/// which turns it into the service's status, except a missing lease, which gets etcd's answer;
/// every other failure gets the usual status.
pub async fn call<T: DeserializeOwned>(
    node: &SharedNode,
    plugin: &BundledPlugin,
    function: &str,
    input: &impl Serialize,
    refused: fn(String) -> Status,
) -> Result<Called<T>, Status> {
    let input = serde_json::to_vec(input).expect("recipe inputs serialise");
    let call = PluginCallRequest {
        name: plugin.name.to_string(),
        function: function.to_string(),
        input,
        caller: String::new(),
        lease: 0,
    };
    let mut outcome = node.submit(Command::PluginCall(call.clone())).await?;
    if matches!(outcome, Err(KvError::PluginNotFound(_))) {
        bundled::ensure_deployed(node, plugin).await?;
        outcome = node.submit(Command::PluginCall(call)).await?;
    }
    match outcome {
        Ok(CommandResponse::PluginCall(called)) => {
            let output = serde_json::from_slice(&called.output).map_err(|error| {
                Status::internal(format!(
                    "plugin {:?} {function} answered in an unexpected form ({error}); is it a replacement of the bundled plugin?",
                    plugin.name
                ))
            })?;
            Ok(Called {
                output,
                revision: called.revision,
            })
        }
        Ok(other) => mismatched(&other),
        Err(KvError::PluginFailed {
            kind: PluginFailureKind::Returned,
            reason,
            ..
        }) if names_a_missing_lease(&reason) => Err(kv_status(&KvError::LeaseNotFound)),
        Err(KvError::PluginFailed {
            kind: PluginFailureKind::Returned,
            reason,
            ..
        }) => Err(refused(reason)),
        Err(error) => Err(kv_status(&error)),
    }
}

/// Whether a plugin's reason is the SDK's text for a put under a lease that does not exist
/// (`KvError::LeaseNotFound`'s, passed on as the bundled plugins do).
fn names_a_missing_lease(reason: &str) -> bool {
    reason.starts_with("lease ") && reason.ends_with(" not found")
}

/// Bytes in a bundled recipe's JSON input, as its plugin reads them
/// (`cairn_plugin_sdk::json::Bytes`): a string when they are UTF-8, an array of byte values
/// otherwise, so etcd keys and values of any bytes fit.
pub struct JsonBytes<'a>(pub &'a [u8]);

impl Serialize for JsonBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => self.0.serialize(serializer),
        }
    }
}

/// Bytes in a bundled recipe's JSON answer, in either of [`JsonBytes`]' forms.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum AnswerBytes {
    Text(String),
    Raw(Vec<u8>),
}

impl From<AnswerBytes> for Vec<u8> {
    fn from(bytes: AnswerBytes) -> Vec<u8> {
        match bytes {
            AnswerBytes::Text(text) => text.into_bytes(),
            AnswerBytes::Raw(raw) => raw,
        }
    }
}

/// Runs `undo` in the background if dropped before [`UndoOnDrop::keep`]: how a recipe service
/// takes back a step (joining a line, say) for a client that gave up before the call finished.
pub struct UndoOnDrop(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl UndoOnDrop {
    pub fn new(undo: impl Future<Output = ()> + Send + 'static) -> UndoOnDrop {
        UndoOnDrop(Some(Box::pin(undo)))
    }

    /// The step stands.
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for UndoOnDrop {
    fn drop(&mut self) {
        if let Some(undo) = self.0.take() {
            tokio::spawn(undo);
        }
    }
}
