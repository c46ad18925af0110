//! `cairn`: the Cairn command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cairn_server::config::ServeConfig;

mod plugin_cli;

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
    Serve(Box<ServeConfig>),
    /// Backups, as `etcdctl snapshot save` takes them from a running member.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Deploy, list, describe, remove, bind and call plugins.
    Plugin(plugin_cli::PluginArgs),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Seed the data directory of a member of a new cluster with a backup's keys and history.
    /// Restore the same backup for every member, then start each with `cairn serve` and the
    /// new cluster's `--initial-cluster`.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The new member's data directory; it must not hold a member yet.
        #[arg(long, default_value = "./cairn-data")]
        data_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(config) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(cairn_server::server::serve(*config, shutdown_signal()))
        }
        Command::Plugin(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // As etcdctl: the reason on stderr, a non-zero status, no backtrace.
            if let Err(error) = runtime.block_on(plugin_cli::run(args)) {
                match error.downcast_ref::<tonic::Status>() {
                    Some(status) => eprintln!("Error: {}", status.message()),
                    None => eprintln!("Error: {error:#}"),
                }
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Snapshot(SnapshotCommand::Restore { file, data_dir }) => {
            let revision =
                cairn_raft::restore_backup(&file, &data_dir, cairn_kernel::Limits::default())
                    .with_context(|| {
                        format!("restoring {} into {}", file.display(), data_dir.display())
                    })?;
            println!(
                "restored {} into {} at revision {revision}",
                file.display(),
                data_dir.display()
            );
            Ok(())
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
