//! `cairn-bench`: a load generator that speaks the etcd v3 API, so the same run can be pointed at
//! cairn and at etcd and the two compared.
//!
//! For the KV workloads ([`kv`]) and plugin calls ([`call`]), `--clients` concurrent clients
//! share `--conns` gRPC connections (HTTP/2, multiplexed) and together send `--total` requests
//! ([`load`]); the `watch` workload is described in [`watch`], and `instantiate`, which times one
//! plugin call in-process with no server at all, in [`instantiate`]. Each prints one line of
//! `name=value` fields: the workload, its shape, the throughput and the latency percentiles.

mod call;
mod instantiate;
mod kv;
mod load;
mod lock;
mod memory_host;
mod watch;

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::kv::{Consistency, KvOp};

#[derive(Parser, Debug)]
#[command(
    about = "Load generator for the etcd v3 KV, Watch and Lock APIs and Cairn's plugin calls"
)]
struct Args {
    /// Comma-separated endpoints; connections are spread over them.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// gRPC connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Concurrent clients, spread over the connections.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests (or in-process calls) in all (default 10,000); for watch, puts in all (default
    /// 1,000).
    #[arg(long)]
    total: Option<u64>,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Distinct keys that puts spread over.
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    #[command(subcommand)]
    workload: Workload,
}

impl Args {
    fn total(&self) -> u64 {
        let default = match self.workload {
            Workload::Watch(_) => watch::DEFAULT_PUTS,
            _ => 10_000,
        };
        self.total.unwrap_or(default)
    }
}

#[derive(Subcommand, Clone, Debug)]
enum Workload {
    /// Puts to keys spread over the key space.
    Put,
    /// Ranges over one key, written before the clock starts.
    Range {
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
    },
    /// Latency from a put to its watchers, with many watchers open.
    Watch(watch::WatchArgs),
    /// Plugin calls through the log (cairn only).
    Call(call::CallArgs),
    /// One plugin call's cost in-process: instantiate, call and drop, with no server.
    Instantiate(instantiate::InstantiateArgs),
    /// Lock and unlock through etcd's v3lock service, with one lease per client.
    Lock(lock::LockArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.conns == 0 || args.clients == 0 || args.key_space == 0 {
        bail!("--conns, --clients and --key-space must be at least 1");
    }
    match &args.workload {
        Workload::Put => kv::run(&args, KvOp::Put).await,
        Workload::Range { consistency } => kv::run(&args, KvOp::Range(*consistency)).await,
        Workload::Watch(watch) => watch::run(&args, *watch).await,
        Workload::Call(call) => call::run(&args, call).await,
        Workload::Instantiate(instantiate) => instantiate::run(args.total(), instantiate),
        Workload::Lock(lock) => lock::run(&args, *lock).await,
    }
}
