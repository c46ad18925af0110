//! `cairn-bench`: a load generator that speaks the etcd v3 API, so the same run can be pointed at
//! cairn and at etcd and the two compared.
//!
//! For the KV workloads, `--clients` concurrent clients share `--conns` gRPC connections (HTTP/2,
//! multiplexed) and together send `--total` requests; the `watch` workload is described in
//! [`watch`]. Each prints one line of `name=value` fields: the workload, its shape, the
//! throughput and the latency percentiles.

mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(about = "Load generator for the etcd v3 KV and Watch APIs")]
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
    /// Requests in all (default 10,000); for watch, puts in all (default 1,000).
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
            Workload::Put | Workload::Range { .. } => 10_000,
        };
        self.total.unwrap_or(default)
    }
}

#[derive(Subcommand, Clone, Copy, Debug)]
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
}

/// A KV workload's request.
#[derive(Clone, Copy, Debug)]
enum KvOp {
    Put,
    Range(Consistency),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

/// Latencies are recorded in microseconds, up to a minute.
const LATENCY_US_MAX: u64 = 60_000_000;

fn key(index: u64, size: usize) -> Vec<u8> {
    let mut key = format!("{index:0size$}").into_bytes();
    key.truncate(size.max(1));
    key
}

async fn client(
    mut kv: KvClient<Channel>,
    args: Arc<Args>,
    op: KvOp,
    issued: Arc<AtomicU64>,
    seed: u64,
) -> anyhow::Result<Histogram<u64>> {
    let mut latencies = Histogram::new_with_max(LATENCY_US_MAX, 3)?;
    let value = vec![b'v'; args.val_size];
    let total = args.total();
    // A cheap deterministic sequence spreads keys without a shared random source.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while issued.fetch_add(1, Ordering::Relaxed) < total {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let started = Instant::now();
        match op {
            KvOp::Put => {
                kv.put(PutRequest {
                    key: key(state % args.key_space, args.key_size),
                    value: value.clone(),
                    ..Default::default()
                })
                .await
                .context("put")?;
            }
            KvOp::Range(consistency) => {
                kv.range(RangeRequest {
                    key: key(0, args.key_size),
                    serializable: consistency == Consistency::S,
                    ..Default::default()
                })
                .await
                .context("range")?;
            }
        }
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        latencies.saturating_record(elapsed_us.max(1));
    }
    Ok(latencies)
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if args.conns == 0 || args.clients == 0 || args.key_space == 0 {
        bail!("--conns, --clients and --key-space must be at least 1");
    }
    match args.workload {
        Workload::Put => run_kv(args, KvOp::Put).await,
        Workload::Range { consistency } => run_kv(args, KvOp::Range(consistency)).await,
        Workload::Watch(watch) => watch::run(&args, watch).await,
    }
}

async fn run_kv(args: Arc<Args>, op: KvOp) -> anyhow::Result<()> {
    let endpoints: Vec<&str> = args.endpoints.split(',').map(str::trim).collect();
    let mut channels = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        channels.push(connect(endpoints[i % endpoints.len()]).await?);
    }
    if let KvOp::Range(_) = op {
        KvClient::new(channels[0].clone())
            .put(PutRequest {
                key: key(0, args.key_size),
                value: vec![b'v'; args.val_size],
                ..Default::default()
            })
            .await
            .context("writing the key to read")?;
    }

    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let kv = KvClient::new(channels[i % channels.len()].clone())
            .max_decoding_message_size(usize::MAX);
        tasks.spawn(client(kv, args.clone(), op, issued.clone(), i as u64 + 1));
    }
    let mut latencies = Histogram::<u64>::new_with_max(LATENCY_US_MAX, 3)?;
    while let Some(result) = tasks.join_next().await {
        latencies.add(result??)?;
    }
    let seconds = started.elapsed().as_secs_f64();

    let (workload, consistency) = match op {
        KvOp::Put => ("put", "-"),
        KvOp::Range(Consistency::L) => ("range", "l"),
        KvOp::Range(Consistency::S) => ("range", "s"),
    };
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "workload={workload} consistency={consistency} clients={} conns={} total={} key_size={} val_size={} \
         seconds={seconds:.3} throughput={:.1} p50_ms={:.3} p99_ms={:.3}",
        args.clients,
        args.conns,
        latencies.len(),
        args.key_size,
        args.val_size,
        latencies.len() as f64 / seconds,
        ms(0.50),
        ms(0.99),
    );
    Ok(())
}
