//! Closed-loop load, shared by the workloads that send one request after another: `--clients`
//! clients over `--conns` gRPC connections, each sending its next request as soon as the last is
//! answered, until `--total` requests have been sent between them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

/// Latencies are recorded in microseconds, up to a minute.
pub const LATENCY_US_MAX: u64 = 60_000_000;

pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// `conns` connections spread over the comma-separated `endpoints` in turn, so that on a
/// cluster every member receives its share of the clients.
pub async fn channels(endpoints: &str, conns: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).collect();
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        channels.push(connect(endpoints[i % endpoints.len()]).await?);
    }
    Ok(channels)
}

/// One client of a workload: sends its next request and waits for the answer.
pub trait Client: Send + 'static {
    fn send(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What a run measured: every request's latency, and how long the run took.
pub struct Measured {
    pub latencies: Histogram<u64>,
    pub seconds: f64,
}

impl Measured {
    /// The fields that end every load workload's line, in the names `compare.sh` reads.
    pub fn fields(&self) -> String {
        let ms = |q: f64| self.latencies.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "total={} seconds={:.3} throughput={:.1} p50_ms={:.3} p99_ms={:.3}",
            self.latencies.len(),
            self.seconds,
            self.latencies.len() as f64 / self.seconds,
            ms(0.50),
            ms(0.99),
        )
    }
}

/// Runs `clients` concurrently until they have sent `total` requests between them.
pub async fn run<C: Client>(clients: Vec<C>, total: u64) -> anyhow::Result<Measured> {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        tasks.spawn(drive(client, issued.clone(), total));
    }
    let mut latencies = Histogram::<u64>::new_with_max(LATENCY_US_MAX, 3)?;
    while let Some(result) = tasks.join_next().await {
        latencies.add(result??)?;
    }
    Ok(Measured {
        latencies,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn drive<C: Client>(
    mut client: C,
    issued: Arc<AtomicU64>,
    total: u64,
) -> anyhow::Result<Histogram<u64>> {
    let mut latencies = Histogram::new_with_max(LATENCY_US_MAX, 3)?;
    while issued.fetch_add(1, Ordering::Relaxed) < total {
        let started = Instant::now();
        client.send().await?;
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        latencies.saturating_record(elapsed_us.max(1));
    }
    Ok(latencies)
}
