//! The `instantiate` workload: what one plugin call costs the member that applies it, timed
//! in-process through the same [`WasmRuntime`] a member runs, with no cluster around it.
//!
//! Every call through the log instantiates the component afresh (a pooled instance, a fresh store
//! with its fuel and limits), calls the function and drops the instance, so this is the work a
//! call adds to apply beyond what a put costs. The component is compiled before the clock starts,
//! as a member compiles it at deploy; the host is [`MemoryHost`], so a plugin that reads or
//! writes pays for the runtime's side of it and almost nothing for the store's.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, anyhow};
use cairn_kernel::plugin::{Digest, LoadedPlugin, PluginLimits, PluginRuntime};
use cairn_wasm::WasmRuntime;
use clap::Args as ClapArgs;
use hdrhistogram::Histogram;

use crate::memory_host::MemoryHost;

/// Calls made before the clock starts, so that the pool's slots and the code's pages have been
/// touched once, as on a member that has been serving for a while.
const WARMUP_CALLS: u64 = 100;
/// Call times are recorded in nanoseconds, up to ten seconds.
const CALL_NS_MAX: u64 = 10_000_000_000;

#[derive(ClapArgs, Clone, Debug)]
pub struct InstantiateArgs {
    /// The component (.wasm) to call.
    #[arg(long)]
    component: PathBuf,
    /// Its recipe function.
    #[arg(long, default_value = "noop")]
    function: String,
    /// The input, as raw bytes.
    #[arg(long, default_value = "")]
    input: String,
}

pub fn run(total: u64, args: &InstantiateArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let runtime = WasmRuntime::new(None)?;
    let digest = Digest::of(&bytes);
    runtime
        .load(digest, &bytes)
        .map_err(|reason| anyhow!("loading {}: {reason}", args.component.display()))?;
    let plugin = LoadedPlugin {
        digest,
        component: &bytes,
        limits: PluginLimits::default(),
    };
    let mut host = MemoryHost::new();
    let mut call = || {
        runtime
            .call(&plugin, &args.function, args.input.as_bytes(), &mut host)
            .map_err(|failure| anyhow!("calling {}: {failure}", args.function))
    };
    for _ in 0..WARMUP_CALLS {
        call()?;
    }

    let mut times = Histogram::<u64>::new_with_max(CALL_NS_MAX, 3)?;
    let started = Instant::now();
    for _ in 0..total {
        let call_started = Instant::now();
        call()?;
        let elapsed_ns = u64::try_from(call_started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        times.saturating_record(elapsed_ns.max(1));
    }
    let seconds = started.elapsed().as_secs_f64();

    let us = |ns: f64| ns / 1000.0;
    let name = args.component.file_name().unwrap_or_default().display();
    println!(
        "workload=instantiate component={name} function={} input_size={} total={total} \
         seconds={seconds:.3} throughput={:.1} mean_us={:.1} p50_us={:.1} p99_us={:.1}",
        args.function,
        args.input.len(),
        total as f64 / seconds,
        us(times.mean()),
        us(times.value_at_quantile(0.50) as f64),
        us(times.value_at_quantile(0.99) as f64),
    );
    Ok(())
}
