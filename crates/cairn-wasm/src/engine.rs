//! The wasmtime engine, configured so that a component computes the same thing on every replica.

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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

/// Linear memory a pooled slot keeps resident for the next call, where Linux can say which
/// pages a call dirtied (the PAGEMAP_SCAN ioctl, Linux 6.7): only those are restored, so a call
/// maps, faults in and gives back nothing. Dirtied memory past this is released to the OS.
const MEMORY_KEPT_RESIDENT_BYTES: usize = 2 << 20;
/// The same for tables: a component's shim tables are a page each.
const TABLE_KEPT_RESIDENT_BYTES: usize = 64 << 10;

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
        .parallel_compilation(true)
        // Bounds are checked in the compiled code rather than by guard pages, so a memory that
        // grows within its pooled slot needs no mprotect, and one that grew needs none to be
        // shrunk back for the next call. Traps are the same either way; the checks cost a
        // little guest speed for a call that is mostly set-up.
        .signals_based_traps(false)
        .memory_guard_size(0)
        .memory_reservation(PluginLimits::MEMORY_BYTES_MAX);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOLED_INSTANCES)
        .total_core_instances(POOLED_INSTANCES * 4)
        .total_memories(POOLED_INSTANCES)
        .total_tables(POOLED_INSTANCES * 4)
        .max_memory_size(PluginLimits::MEMORY_BYTES_MAX as usize);
    // Only with PAGEMAP_SCAN: without it, wasmtime would memset every kept byte after each call.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEPT_RESIDENT_BYTES)
            .table_keep_resident(TABLE_KEPT_RESIDENT_BYTES);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}
