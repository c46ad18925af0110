//! The wasmtime engine, configured so that a component computes the same thing on every replica.

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use cairn_kernel::plugin::PluginLimits;

/// The wasmtime release every member runs. Fuel accounting and compiled code differ between
/// releases, so a cluster must not mix them; the workspace pins this exact version.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// What [`cairn_kernel::plugin::PluginRuntime::engine`] reports: the wasmtime version and the
/// architecture Cranelift compiles for, since native frame sizes decide how deep a recursion may
/// go before it traps.
pub fn engine_name() -> String {
    format!("wasmtime {WASMTIME_VERSION} {}", std::env::consts::ARCH)
}

/// Deepest native stack a call may use. A stack overflow traps like any other trap.
const WASM_STACK_BYTES: usize = 512 << 10;

/// How many instances may be live at once on one member: apply runs one call at a time, read-only
/// calls run beside it.
const POOLED_INSTANCES: u32 = 64;

/// Threads need no switch: wasmtime is built without its `threads` feature, so a component with
/// shared memory or atomics waits is refused at deploy.
pub fn engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .wasm_component_model(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        .parallel_compilation(true);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOLED_INSTANCES)
        .total_core_instances(POOLED_INSTANCES * 4)
        .total_memories(POOLED_INSTANCES)
        .total_tables(POOLED_INSTANCES * 4)
        .max_memory_size(PluginLimits::MEMORY_BYTES_MAX as usize);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}
