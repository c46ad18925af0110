//! Calls of a recipe plugin through `cairn.v1.Plugins/Call`, JSON in and out.

use cairn_proto::cairn_v1::plugins_client::PluginsClient;
use cairn_proto::cairn_v1::{CallRequest, call_request};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::Error;

/// Whether a call may skip the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Through the log: may write.
    Write,
    /// A linearizable read: no log entry, no writes.
    Read,
}

pub async fn call<T: DeserializeOwned>(
    channel: &Channel,
    plugin: &'static str,
    function: &str,
    input: &impl Serialize,
    mode: Mode,
) -> Result<T, Error> {
    let input = serde_json::to_string(input).expect("recipe inputs serialise");
    let response = PluginsClient::new(channel.clone())
        .call(CallRequest {
            plugin: plugin.to_string(),
            function: function.to_string(),
            input: Some(call_request::Input::Json(input)),
            read_only: mode == Mode::Read,
            ..Default::default()
        })
        .await?
        .into_inner();
    serde_json::from_slice(&response.output).map_err(|error| Error::Protocol {
        plugin,
        reason: format!("{function}: {error}"),
    })
}
