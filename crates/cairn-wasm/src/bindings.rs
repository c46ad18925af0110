//! Host-side bindings generated from `wit/`: one module per guest world, sharing the imports.

pub mod recipe {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "recipe-plugin",
        imports: { "cairn:plugin/kv": trappable },
    });
}

pub mod validator {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "validator-plugin",
        with: {
            "cairn:plugin/kv": super::recipe::cairn::plugin::kv,
            "cairn:plugin/context": super::recipe::cairn::plugin::context,
            "cairn:plugin/random": super::recipe::cairn::plugin::random,
            "cairn:plugin/log": super::recipe::cairn::plugin::log,
        },
    });
}

pub use recipe::cairn::plugin::{context, kv, log, random};
