//! Demonstrates the deploy-time import check: this component imports `wasi:random/random@0.2.0`,
//! outside `cairn:plugin`, so the host must refuse it and name that import. Its `random` function
//! calls the import, so the import survives into the component.

wit_bindgen::generate!({
    path: ["../../../wit", "wit"],
    world: "cairn:hostile-wasi/hostile-wasi",
    // wasi:random comes from wit/deps, which wit-bindgen otherwise expects a crate to provide.
    generate_all,
});

use exports::cairn::plugin::recipe::Guest;
use wasi::random::random::get_random_u64;

struct HostileWasi;

impl Guest for HostileWasi {
    fn call(function: String, _input: Vec<u8>) -> Result<Vec<u8>, String> {
        match function.as_str() {
            "random" => Ok(get_random_u64().to_le_bytes().to_vec()),
            other => Err(format!("unknown function {other:?}")),
        }
    }
}

// Natively (the workspace's host build) the export symbols would not link; see cairn-plugin-sdk.
#[cfg(target_arch = "wasm32")]
export!(HostileWasi);
