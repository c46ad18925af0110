//! Demonstrates the memory limit: `grow` writes a key, then allocates and touches 1 MiB chunks
//! until the host stops it; the call must fail and the key must not be written.

use std::hint::black_box;

use cairn_plugin_sdk::kv;

const CHUNK_BYTES: usize = 1 << 20;

fn grow(_input: &[u8]) -> Result<Vec<u8>, String> {
    // A read-only call may not write; it carries on so that it fails like a logged one.
    let _refused = kv::put(b"hostile/memory", b"written before growing");
    let mut chunks = Vec::new();
    loop {
        // Touch every page so the memory is really used, not just reserved.
        let mut chunk = vec![0u8; CHUNK_BYTES];
        for page in chunk.iter_mut().step_by(4096) {
            *page = 1;
        }
        chunks.push(black_box(chunk));
    }
}

cairn_plugin_sdk::recipe! { "grow" => grow }
