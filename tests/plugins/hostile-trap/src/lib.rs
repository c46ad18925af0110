//! Demonstrates that a trap discards the call's writes: `trap_after_writes` puts three keys under
//! `hostile/` and then panics, which in WebAssembly is a trap.

use cairn_plugin_sdk::kv;

fn trap_after_writes(_input: &[u8]) -> Result<Vec<u8>, String> {
    for key in ["hostile/trap/1", "hostile/trap/2", "hostile/trap/3"] {
        // A read-only call may not write; it carries on so that it traps like a logged one.
        let _refused = kv::put(key.as_bytes(), b"written before the trap");
    }
    panic!("trapping after three writes");
}

cairn_plugin_sdk::recipe! { "trap_after_writes" => trap_after_writes }
