//! The code wit-bindgen generates from `wit/plugin.wit`.
//!
//! The imports are generated once, for the `host` world. Each export gets its own world's
//! bindings with the imports mapped onto those, and an export macro that emits that world's
//! component-type section in the plugin crate that invokes it; so a plugin's component declares
//! exactly the exports it implements, one, the other or both.

wit_bindgen::generate!({
    path: "../../wit",
    world: "host",
});

/// The `recipe-plugin` world's export side.
pub mod recipe {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "recipe-plugin",
        with: {
            "cairn:plugin/kv@0.1.0": crate::bindings::cairn::plugin::kv,
            "cairn:plugin/context@0.1.0": crate::bindings::cairn::plugin::context,
            "cairn:plugin/random@0.1.0": crate::bindings::cairn::plugin::random,
            "cairn:plugin/log@0.1.0": crate::bindings::cairn::plugin::log,
        },
        pub_export_macro: true,
        export_macro_name: "export_recipe",
    });
}

/// The `validator-plugin` world's export side.
pub mod validator {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "validator-plugin",
        with: {
            "cairn:plugin/kv@0.1.0": crate::bindings::cairn::plugin::kv,
            "cairn:plugin/context@0.1.0": crate::bindings::cairn::plugin::context,
            "cairn:plugin/random@0.1.0": crate::bindings::cairn::plugin::random,
            "cairn:plugin/log@0.1.0": crate::bindings::cairn::plugin::log,
        },
        pub_export_macro: true,
        export_macro_name: "export_validator",
    });
}
