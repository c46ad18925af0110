//! The `watch` workload: how long a put takes to reach the watchers of its key.
//!
//! `--watchers` watchers are opened on the first endpoint, over `--streams` bidirectional Watch
//! calls spread over `--conns` connections. Watchers fall into groups of `--fanout`, each group
//! watching its own prefix `w/<group>/`, and put `i` writes `w/<i mod groups>/<i>`: every put is
//! owed to a known number of watchers, and the rest of the watchers sit idle beside them, as a
//! busy server's would. Once every watcher is created, one writer puts `--total` keys at `--rate`
//! puts/s through the last endpoint (on a cluster, so the events cross from one member to
//! another), each value holding the nanoseconds since a shared clock origin at which it was sent.
//! An event's latency is its arrival time minus that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tonic::Streaming;
use tonic::transport::Channel;

// tonic re-exports tokio-stream for its generated code; using it keeps the bench's dependencies
// (and the workspace lockfile) as they are.
use tonic::codegen::tokio_stream::{self, StreamExt};

use crate::Args;
use crate::load::{LATENCY_US_MAX, connect};

/// How long to keep listening after the last put is acknowledged, for events still in flight:
/// bounds the run when a server falls behind or drops events.
const STRAGGLER_WAIT: Duration = Duration::from_secs(10);
/// How long every watcher may take to be created.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the writer's side checks whether every event has arrived.
const POLL: Duration = Duration::from_millis(10);

#[derive(ClapArgs, Clone, Copy, Debug)]
pub struct WatchArgs {
    /// Watchers in all, all on the first endpoint.
    #[arg(long, default_value_t = 10_000)]
    watchers: u64,
    /// Watch streams (bidirectional Watch calls) the watchers are spread over.
    #[arg(long, default_value_t = 100)]
    streams: u64,
    /// Watchers each put is delivered to (watchers per key prefix).
    #[arg(long, default_value_t = 10)]
    fanout: u64,
    /// Puts per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
}

/// Puts written when `--total` is not given.
pub const DEFAULT_PUTS: u64 = 1_000;

/// What the receiving streams have seen so far, across all of them.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    /// Nanoseconds after the origin at which the newest event arrived.
    last_arrival_ns: AtomicU64,
}

pub async fn run(args: &Args, watch: WatchArgs) -> anyhow::Result<()> {
    if watch.watchers == 0 || watch.streams == 0 || watch.fanout == 0 || watch.rate == 0 {
        bail!("--watchers, --streams, --fanout and --rate must be at least 1");
    }
    let endpoints: Vec<&str> = args.endpoints.split(',').map(str::trim).collect();
    let groups = watch.watchers.div_ceil(watch.fanout);
    let puts = args.total();

    let mut channels = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        channels.push(connect(endpoints[0]).await?);
    }
    // The writer has a connection of its own, so its puts never queue behind event traffic.
    let writer = connect(endpoints[endpoints.len() - 1]).await?;

    let streams = tokio::time::timeout(CREATE_TIMEOUT, open_all(&channels, watch, groups))
        .await
        .context("creating the watchers timed out")??;

    let origin = Instant::now();
    let tally = Arc::new(Tally::default());
    let (stop, stopped) = watch::channel(false);
    let mut receivers = tokio::task::JoinSet::new();
    for stream in streams {
        receivers.spawn(receive(stream, origin, stopped.clone(), tally.clone()));
    }

    let put_latencies = write(writer, watch.rate, puts, groups, args.val_size, origin).await?;
    let expected = expected_deliveries(watch.watchers, groups, puts);
    wait_for(&tally, expected).await;
    stop.send_replace(true);

    let mut latencies = Histogram::<u64>::new_with_max(LATENCY_US_MAX, 3)?;
    while let Some(result) = receivers.join_next().await {
        latencies.add(result??)?;
    }
    report(
        args,
        watch,
        puts,
        expected,
        &tally,
        &latencies,
        &put_latencies,
    );
    Ok(())
}

/// Opens every stream at once and waits until all their watchers are created.
async fn open_all(
    channels: &[Channel],
    watch: WatchArgs,
    groups: u64,
) -> anyhow::Result<Vec<Streaming<WatchResponse>>> {
    let mut opening = tokio::task::JoinSet::new();
    for stream in 0..watch.streams {
        let channel = channels[stream as usize % channels.len()].clone();
        // Watcher n is on stream n mod streams and in group n mod groups.
        let prefixes: Vec<u64> = (stream..watch.watchers)
            .step_by(watch.streams as usize)
            .map(|watcher| watcher % groups)
            .collect();
        opening.spawn(open(channel, prefixes));
    }
    let mut streams = Vec::with_capacity(watch.streams as usize);
    while let Some(result) = opening.join_next().await {
        streams.push(result??);
    }
    Ok(streams)
}

/// Opens one Watch call with a watcher on each group's prefix in `groups` and returns its
/// responses once every watcher is created.
async fn open(channel: Channel, groups: Vec<u64>) -> anyhow::Result<Streaming<WatchResponse>> {
    let wanted = groups.len();
    let creates: Vec<WatchRequest> = groups.into_iter().map(create_request).collect();
    // The request side stays open: a server may end the call when the client stops sending.
    let requests = tokio_stream::iter(creates).chain(tokio_stream::pending());
    let mut responses = WatchClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .watch(requests)
        .await
        .context("opening a watch stream")?
        .into_inner();
    let mut created = 0;
    while created < wanted {
        let Some(response) = responses.message().await.context("creating watchers")? else {
            bail!("the watch stream ended while creating watchers");
        };
        if response.canceled {
            bail!(
                "watcher {} cancelled: {}",
                response.watch_id,
                response.cancel_reason
            );
        }
        created += usize::from(response.created);
    }
    Ok(responses)
}

fn create_request(group: u64) -> WatchRequest {
    let key = prefix(group);
    let mut range_end = key.clone();
    // The prefix ends in '/': the next byte ends the range of every key that starts with it.
    *range_end.last_mut().expect("a prefix is never empty") += 1;
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            ..Default::default()
        })),
    }
}

fn prefix(group: u64) -> Vec<u8> {
    format!("w/{group}/").into_bytes()
}

/// Records every event's latency until told to stop.
async fn receive(
    mut responses: Streaming<WatchResponse>,
    origin: Instant,
    mut stop: watch::Receiver<bool>,
    tally: Arc<Tally>,
) -> anyhow::Result<Histogram<u64>> {
    let mut latencies = Histogram::new_with_max(LATENCY_US_MAX, 3)?;
    loop {
        let response = tokio::select! {
            response = responses.message() => response.context("receiving events")?,
            _ = stop.changed() => return Ok(latencies),
        };
        let Some(response) = response else {
            bail!("a watch stream ended while events were due");
        };
        if response.canceled {
            bail!(
                "watcher {} cancelled: {}",
                response.watch_id,
                response.cancel_reason
            );
        }
        let arrived_ns = nanos_since(origin);
        for event in &response.events {
            let sent_ns = event.kv.as_ref().and_then(|kv| sent_at(&kv.value));
            let Some(sent_ns) = sent_ns else {
                bail!("an event without a send time: {event:?}");
            };
            latencies.saturating_record((arrived_ns.saturating_sub(sent_ns) / 1_000).max(1));
        }
        let events = response.events.len() as u64;
        if events > 0 {
            tally.delivered.fetch_add(events, Ordering::Relaxed);
            tally
                .last_arrival_ns
                .fetch_max(arrived_ns, Ordering::Relaxed);
        }
    }
}

/// Puts `puts` keys at `rate` puts/s, each valued with its send time, and returns the puts'
/// latencies once every put is acknowledged: what of an event's latency is the write's own.
/// Each put is its own task, so a slow one does not hold back the rate.
async fn write(
    channel: Channel,
    rate: u64,
    puts: u64,
    groups: u64,
    val_size: usize,
    origin: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let kv = KvClient::new(channel);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut pending = tokio::task::JoinSet::new();
    for put in 0..puts {
        ticks.tick().await;
        let mut key = prefix(put % groups);
        key.extend_from_slice(put.to_string().as_bytes());
        let mut kv = kv.clone();
        let value = send_time(nanos_since(origin), val_size);
        pending.spawn(async move {
            let started = Instant::now();
            let request = PutRequest {
                key,
                value,
                ..Default::default()
            };
            kv.put(request).await.map(|_| started.elapsed())
        });
    }
    let mut latencies = Histogram::new_with_max(LATENCY_US_MAX, 3)?;
    while let Some(result) = pending.join_next().await {
        let elapsed = result?.context("put")?;
        let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        latencies.saturating_record(elapsed_us.max(1));
    }
    Ok(latencies)
}

/// Waits until `expected` events have arrived, or until `STRAGGLER_WAIT` has passed.
async fn wait_for(tally: &Tally, expected: u64) {
    let deadline = Instant::now() + STRAGGLER_WAIT;
    while tally.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// Events owed: each put reaches every watcher of its group, and group g holds the watchers
/// n < watchers with n mod groups = g.
fn expected_deliveries(watchers: u64, groups: u64, puts: u64) -> u64 {
    let group_size = |group: u64| watchers / groups + u64::from(group < watchers % groups);
    (0..puts).map(|put| group_size(put % groups)).sum()
}

/// A value holding `sent_ns` in decimal, zero-padded to `val_size` bytes.
fn send_time(sent_ns: u64, val_size: usize) -> Vec<u8> {
    format!("{sent_ns:0val_size$}").into_bytes()
}

fn sent_at(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn nanos_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn report(
    args: &Args,
    watch: WatchArgs,
    puts: u64,
    expected: u64,
    tally: &Tally,
    latencies: &Histogram<u64>,
    put_latencies: &Histogram<u64>,
) {
    let delivered = tally.delivered.load(Ordering::Relaxed);
    // From the origin, just before the first put, to the last event's arrival.
    let seconds = tally.last_arrival_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let ms = |latencies: &Histogram<u64>, q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "workload=watch watchers={} streams={} conns={} fanout={} puts={puts} rate={} val_size={} \
         delivered={delivered} expected={expected} delivered_ratio={:.4} seconds={seconds:.3} \
         events_per_s={:.1} p50_ms={:.3} p99_ms={:.3} put_p50_ms={:.3} put_p99_ms={:.3}",
        watch.watchers,
        watch.streams,
        args.conns,
        watch.fanout,
        watch.rate,
        args.val_size,
        delivered as f64 / expected as f64,
        if seconds > 0.0 {
            delivered as f64 / seconds
        } else {
            0.0
        },
        ms(latencies, 0.50),
        ms(latencies, 0.99),
        ms(put_latencies, 0.50),
        ms(put_latencies, 0.99),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_deliveries_count_every_watcher_of_each_put_group() {
        // 10 watchers in groups of 3: 4 groups of sizes 3, 3, 2, 2.
        assert_eq!(expected_deliveries(10, 4, 4), 10);
        assert_eq!(expected_deliveries(10, 4, 6), 16);
        assert_eq!(expected_deliveries(10_000, 1, 7), 70_000);
    }

    #[test]
    fn a_send_time_reads_back_whatever_the_value_size() {
        for size in [0, 8, 256] {
            assert_eq!(sent_at(&send_time(123_456_789, size)), Some(123_456_789));
        }
    }
}
