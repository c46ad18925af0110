//! Cairn's plugin runtime: runs `cairn:plugin` WebAssembly components with wasmtime, the same way
//! on every replica.
//!
//! The kernel decides what a plugin may see and keeps its writes; this crate only runs code, and
//! runs it deterministically: fuel instead of time, fixed memory and table limits, canonical NaNs,
//! deterministic relaxed SIMD, no threads, and no imports but Cairn's own. Compiled components
//! are cached by digest (in memory, and on disk when given a directory) and pre-instantiated, so
//! a call costs an instantiation from a warm pool, not a compile.

mod bindings;
mod engine;
mod host;
mod runtime;

pub use engine::{WASMTIME_VERSION, engine_name};
pub use runtime::{RuntimeError, WasmRuntime};
