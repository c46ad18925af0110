//! `cairn plugin ...`: manage and call plugins over the `cairn.v1.Plugins` API, with etcdctl's
//! conventions (`--endpoints`, errors on stderr, a non-zero exit status on failure).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use cairn_proto::cairn_v1 as pb;
use cairn_proto::cairn_v1::plugins_client::PluginsClient;
use cairn_server::manifest_file::ManifestFile;
use clap::{Args, Subcommand};
use tonic::transport::Channel;

#[derive(Args)]
pub struct PluginArgs {
    /// Comma-separated client URLs of cluster members; the first that answers is used.
    #[arg(
        long,
        global = true,
        env = "CAIRN_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    endpoints: String,

    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Deploy a component as plugin NAME, replacing the version deployed under that name; the
    /// new version stays bound to the prefixes the old one validates.
    Deploy {
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        /// A TOML manifest: version, prefixes, hooks and limits (see examples/counter).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The version to record; overrides the manifest's. Default: the digest's first 12 hex digits.
        #[arg(long)]
        version: Option<String>,
        /// A key prefix the plugin may read and write (repeatable); adds to the manifest's.
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
    },
    /// List the deployed plugins.
    List,
    /// Show one plugin's version, digest, exports, manifest and deploy index.
    Describe { name: String },
    /// Remove a plugin, with its bindings.
    Rm { name: String },
    /// Bind a validator plugin to every write under PREFIX; the binding outlives redeploys.
    Bind {
        name: String,
        prefix: String,
        /// Unbind instead.
        #[arg(long)]
        unbind: bool,
    },
    /// Call FUNCTION of plugin NAME and print its result on stdout.
    Call {
        name: String,
        function: String,
        /// The input; empty if left out.
        input: Option<String>,
        /// Send the input as JSON (checked to parse before the call).
        #[arg(long)]
        json: bool,
        /// Run without writing, outside the log, after a linearizable read barrier.
        #[arg(long)]
        read_only: bool,
        /// With --read-only: answer from the member's own state, without the barrier.
        #[arg(long, requires = "read_only")]
        serializable: bool,
        /// A lease (hex, as etcdctl prints them) the plugin may attach keys to.
        #[arg(long)]
        lease: Option<String>,
    },
}

pub async fn run(args: PluginArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.endpoints).await?;
    match args.command {
        PluginCommand::Deploy {
            name,
            file,
            manifest,
            version,
            prefixes,
        } => {
            let component =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let manifest = match manifest {
                Some(path) => ManifestFile::read(&path)?,
                None => ManifestFile::default(),
            };
            let mut wire = manifest.to_wire();
            wire.prefixes
                .extend(prefixes.iter().map(|p| p.as_bytes().to_vec()));
            let version = version.or(manifest.version).unwrap_or_default();
            let version = if version.is_empty() {
                cairn_kernel::plugin::Digest::of(&component).to_hex()[..12].to_string()
            } else {
                version
            };
            let response = client
                .deploy(pb::DeployRequest {
                    name,
                    version,
                    component,
                    manifest: Some(wire),
                })
                .await?
                .into_inner();
            let plugin = response.plugin.unwrap_or_default();
            match response.replaced.as_str() {
                "" => println!(
                    "deployed {} {} ({})",
                    plugin.name, plugin.version, plugin.digest
                ),
                old => println!(
                    "deployed {} {} ({}), replacing {old}",
                    plugin.name, plugin.version, plugin.digest
                ),
            }
        }
        PluginCommand::List => {
            let response = client.list(pb::ListRequest {}).await?.into_inner();
            for plugin in response.plugins {
                println!(
                    "{}, {}, {}, {}",
                    plugin.name,
                    plugin.version,
                    plugin.digest,
                    exports(&plugin)
                );
            }
        }
        PluginCommand::Describe { name } => {
            let response = client
                .describe(pb::DescribeRequest { name })
                .await?
                .into_inner();
            print!("{}", describe(&response.plugin.unwrap_or_default()));
        }
        PluginCommand::Rm { name } => {
            client
                .remove(pb::RemoveRequest { name: name.clone() })
                .await?;
            println!("removed {name}");
        }
        PluginCommand::Bind {
            name,
            prefix,
            unbind,
        } => {
            client
                .bind(pb::BindRequest {
                    name: name.clone(),
                    prefix: prefix.as_bytes().to_vec(),
                    unbind,
                })
                .await?;
            let verb = if unbind { "unbound" } else { "bound" };
            println!("{verb} {name} to {prefix:?}");
        }
        PluginCommand::Call {
            name,
            function,
            input,
            json,
            read_only,
            serializable,
            lease,
        } => {
            let input = input.unwrap_or_default();
            let lease = match lease {
                Some(hex) => i64::from_str_radix(&hex, 16)
                    .with_context(|| format!("--lease {hex:?} is not a hex lease ID"))?,
                None => 0,
            };
            let response = client
                .call(pb::CallRequest {
                    plugin: name,
                    function,
                    input: Some(if json {
                        pb::call_request::Input::Json(input)
                    } else {
                        pb::call_request::Input::Raw(input.into_bytes())
                    }),
                    read_only,
                    serializable,
                    lease,
                })
                .await?
                .into_inner();
            for line in &response.logs {
                eprintln!("log: {line}");
            }
            let mut stdout = std::io::stdout();
            stdout.write_all(&response.output)?;
            if !response.output.ends_with(b"\n") {
                stdout.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}

async fn connect(endpoints: &str) -> anyhow::Result<PluginsClient<Channel>> {
    let client = cairn_client::Client::connect(endpoints).await?;
    Ok(PluginsClient::new(client.channel().clone())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

fn exports(plugin: &pb::PluginInfo) -> &'static str {
    match (plugin.recipe, plugin.validator) {
        (true, true) => "recipe+validator",
        (true, false) => "recipe",
        (false, true) => "validator",
        (false, false) => "nothing",
    }
}

fn describe(plugin: &pb::PluginInfo) -> String {
    let manifest = plugin.manifest.clone().unwrap_or_default();
    let limits = manifest.limits.unwrap_or_default();
    let list = |prefixes: &[Vec<u8>]| {
        prefixes
            .iter()
            .map(|p| format!("{:?}", String::from_utf8_lossy(p)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "name: {}\nversion: {}\ndigest: {}\nsize: {}\nexports: {}\nprefixes: [{}]\nhooks: [{}]\n\
         fuel: {}\nmemory_bytes: {}\noutput_bytes: {}\ndeployed_index: {}\nengine: {}\n",
        plugin.name,
        plugin.version,
        plugin.digest,
        plugin.size,
        exports(plugin),
        list(&manifest.prefixes),
        list(&manifest.hooks),
        limits.fuel,
        limits.memory_bytes,
        limits.output_bytes,
        plugin.deployed_index,
        plugin.engine
    )
}
