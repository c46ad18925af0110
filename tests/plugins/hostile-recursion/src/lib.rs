//! Demonstrates stack exhaustion: `deep` recurses without bound until the stack overflows, which
//! must fail the call the same way on every replica.

use std::hint::black_box;

/// Recurses until the stack runs out; black_box keeps the optimizer from turning the recursion
/// into a loop, and the condition, always false at run time, satisfies rustc that it can return.
fn descend(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let frame = black_box([depth; 8]);
    black_box(descend(frame[0] + 1)) + frame[7]
}

fn deep(_input: &[u8]) -> Result<Vec<u8>, String> {
    Ok(descend(0).to_le_bytes().to_vec())
}

cairn_plugin_sdk::recipe! { "deep" => deep }
