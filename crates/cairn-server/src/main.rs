//! `cairn`: the Cairn command line.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cairn_server::config::ServeConfig;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a coordination service that speaks the etcd v3 API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a member, serving clients until SIGINT or SIGTERM.
    Serve(ServeConfig),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(config) => {
            runtime.block_on(cairn_server::server::serve(config, shutdown_signal()))
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
