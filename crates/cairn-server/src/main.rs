//! `cairn`: the Cairn command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cairn_server::config::ServeConfig;

mod plugin_cli;
mod recipe_cli;

/// A member allocates for every request on several threads at once (gRPC frames, batches, log
/// entries, kernel changes); mimalloc's thread-local heaps cost a fraction of glibc's locking
/// allocator there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Hold a lock (the bundled lock recipe) while a command runs, or until interrupted.
    Lock(recipe_cli::LockArgs),
    /// Campaign in an election (the bundled election recipe) and lead until interrupted, or
    /// watch its leader with --listen.
    Elect(recipe_cli::ElectArgs),
    /// Service discovery: register, list, watch and deregister instances.
    Svc(recipe_cli::SvcArgs),
    /// Durable queues: push, claim, ack, nack, len.
    Queue(recipe_cli::QueueArgs),
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
            let served = runtime.block_on(cairn_server::server::serve(*config, shutdown_signal()));
            drop(runtime);
            // As etcd, one line that says why, then a non-zero exit.
            if let Err(error) = served {
                eprintln!("Error: {error:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Plugin(args) => client(async { plugin_cli::run(args).await.map(|()| 0) }),
        Command::Lock(args) => client(recipe_cli::lock(args)),
        Command::Elect(args) => client(recipe_cli::elect(args)),
        Command::Svc(args) => client(recipe_cli::svc(args)),
        Command::Queue(args) => client(recipe_cli::queue(args)),
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

/// Runs a client command and exits with its status; as etcdctl, a failure prints the reason on
/// stderr, without a backtrace, and exits with 1.
fn client(command: impl std::future::Future<Output = anyhow::Result<i32>>) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the runtime");
    match runtime.block_on(command) {
        Ok(status) => std::process::exit(status),
        Err(error) => {
            match error.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("Error: {}", status.message()),
                None => eprintln!("Error: {error:#}"),
            }
            std::process::exit(1);
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
