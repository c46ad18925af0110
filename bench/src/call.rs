//! The `call` workload: plugin calls through the log (`cairn.v1.Plugins/Call`, not read-only),
//! under the same closed-loop load as puts, so the two can be compared shape for shape. Each call
//! is a log entry like a put, but applying it instantiates the plugin and runs it.

use anyhow::Context;
use cairn_proto::cairn_v1::plugins_client::PluginsClient;
use cairn_proto::cairn_v1::{CallRequest, call_request};
use clap::Args as ClapArgs;
use tonic::transport::Channel;

use crate::Args;
use crate::load::{self, Client};

#[derive(ClapArgs, Clone, Debug)]
pub struct CallArgs {
    /// The deployed plugin to call.
    #[arg(long)]
    plugin: String,
    /// Its recipe function.
    #[arg(long)]
    function: String,
    /// The input, sent as raw bytes; empty if left out.
    #[arg(long, default_value = "")]
    input: String,
}

struct Caller {
    plugins: PluginsClient<Channel>,
    request: CallRequest,
}

impl Client for Caller {
    async fn send(&mut self) -> anyhow::Result<()> {
        self.plugins
            .call(self.request.clone())
            .await
            .context("call")?;
        Ok(())
    }
}

pub async fn run(args: &Args, call: &CallArgs) -> anyhow::Result<()> {
    let channels = load::channels(&args.endpoints, args.conns).await?;
    let request = CallRequest {
        plugin: call.plugin.clone(),
        function: call.function.clone(),
        input: Some(call_request::Input::Raw(call.input.clone().into_bytes())),
        ..Default::default()
    };
    let clients = (0..args.clients)
        .map(|i| Caller {
            plugins: PluginsClient::new(channels[i % channels.len()].clone())
                .max_decoding_message_size(usize::MAX),
            request: request.clone(),
        })
        .collect();
    let measured = load::run(clients, args.total()).await?;
    println!(
        "workload=call plugin={} function={} input_size={} clients={} conns={} {}",
        call.plugin,
        call.function,
        call.input.len(),
        args.clients,
        args.conns,
        measured.fields(),
    );
    Ok(())
}
