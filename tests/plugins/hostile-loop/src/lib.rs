//! Demonstrates the fuel limit: `spin` writes a key, then loops forever; `spin_on_host` loops on
//! cheap host calls, which the call's fuel must cover too. Each call must fail and write nothing.

use std::hint::black_box;

use cairn_plugin_sdk::kv;

fn spin(_input: &[u8]) -> Result<Vec<u8>, String> {
    // A read-only call may not write; it carries on so that it fails like a logged one.
    let _refused = kv::put(b"hostile/loop", b"written before spinning");
    let mut turns = 0u64;
    loop {
        // black_box keeps the optimizer from proving the loop has no effect.
        turns = black_box(turns.wrapping_add(1));
    }
}

fn spin_on_host(_input: &[u8]) -> Result<Vec<u8>, String> {
    let _refused = kv::put(b"hostile/loop", b"written before spinning");
    loop {
        black_box(kv::get(b"hostile/loop").map_err(|e| e.to_string())?);
    }
}

cairn_plugin_sdk::recipe! { "spin" => spin, "spin_on_host" => spin_on_host }
