//! The guest side of Cairn's plugin interface (`wit/plugin.wit`, `cairn:plugin@0.1.0`).
//!
//! A plugin is a `cdylib` crate built for `wasm32-unknown-unknown` and turned into a component by
//! `cairn-plugin-build`. This crate spares it the generated bindings: [`kv`], [`context`],
//! [`random`] and [`log`] wrap the host's imports, and [`recipe!`] and [`validator!`] export the
//! plugin's entry points. One plugin may use both macros and export both interfaces.
//!
//! ```no_run
//! fn hello(input: &[u8]) -> Result<Vec<u8>, String> {
//!     cairn_plugin_sdk::kv::put(b"greetings/last", input).map_err(|e| e.to_string())?;
//!     Ok(b"hello".to_vec())
//! }
//! cairn_plugin_sdk::recipe! { "hello" => hello }
//! ```

pub mod context;
#[cfg(feature = "json")]
pub mod json;
pub mod kv;
pub mod log;
pub mod random;

mod bindings;

pub use bindings::cairn::plugin::kv::{KeyValue, RangeResult};
pub use bindings::validator::exports::cairn::plugin::validator::Write;
pub use kv::KvError;

/// What a recipe plugin implements: clients call `function` with `input` and get the returned
/// bytes, or the error as the call's failure reason (its writes discarded).
pub trait Recipe {
    fn call(function: &str, input: &[u8]) -> Result<Vec<u8>, String>;
}

/// What a validator plugin implements: `writes` are one request's writes under the prefix the
/// validator is bound to, in key order; an error rejects the whole request with that reason.
pub trait Validator {
    fn validate(writes: Vec<Write>) -> Result<(), String>;
}

/// Exports `cairn:plugin/recipe` from this plugin.
///
/// Either name a type implementing [`Recipe`], or list the functions as `"name" => handler`
/// pairs, where each handler is a `fn(&[u8]) -> Result<Vec<u8>, String>`; calling any other name
/// fails with `unknown function "name"`.
#[macro_export]
macro_rules! recipe {
    ($($name:literal => $handler:path),+ $(,)?) => {
        const _: () = {
            struct CairnRecipe;
            impl $crate::Recipe for CairnRecipe {
                fn call(
                    function: &str,
                    input: &[u8],
                ) -> ::core::result::Result<$crate::__private::Vec<u8>, $crate::__private::String> {
                    match function {
                        $($name => $handler(input),)+
                        other => ::core::result::Result::Err($crate::__private::unknown_function(other)),
                    }
                }
            }
            $crate::recipe!(CairnRecipe);
        };
    };
    ($ty:ty) => {
        const _: () = {
            struct CairnRecipeExport;
            impl $crate::__private::RecipeGuest for CairnRecipeExport {
                fn call(
                    function: $crate::__private::String,
                    input: $crate::__private::Vec<u8>,
                ) -> ::core::result::Result<$crate::__private::Vec<u8>, $crate::__private::String> {
                    <$ty as $crate::Recipe>::call(&function, &input)
                }
            }
            // Only WebAssembly gets the exports: their symbol names are not valid in a native
            // library, and natively (the workspace's host build) the plugin only has to compile.
            // KEEP stands in so the plugin's functions do not count as unused there.
            #[cfg(target_arch = "wasm32")]
            $crate::__private::export_recipe!(CairnRecipeExport with_types_in $crate::__private::recipe_bindings);
            #[cfg(not(target_arch = "wasm32"))]
            #[used]
            static KEEP: $crate::__private::RecipeFn = <$ty as $crate::Recipe>::call;
        };
    };
}

/// Exports `cairn:plugin/validator` from this plugin, implemented by a type implementing
/// [`Validator`].
#[macro_export]
macro_rules! validator {
    ($ty:ty) => {
        const _: () = {
            struct CairnValidatorExport;
            impl $crate::__private::ValidatorGuest for CairnValidatorExport {
                fn validate(
                    writes: $crate::__private::Vec<$crate::Write>,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    <$ty as $crate::Validator>::validate(writes)
                }
            }
            // Only WebAssembly gets the exports: their symbol names are not valid in a native
            // library, and natively (the workspace's host build) the plugin only has to compile.
            // KEEP stands in so the plugin's functions do not count as unused there.
            #[cfg(target_arch = "wasm32")]
            $crate::__private::export_validator!(CairnValidatorExport with_types_in $crate::__private::validator_bindings);
            #[cfg(not(target_arch = "wasm32"))]
            #[used]
            static KEEP: $crate::__private::ValidatorFn = <$ty as $crate::Validator>::validate;
        };
    };
}

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::recipe as recipe_bindings;
    pub use crate::bindings::recipe::export_recipe;
    pub use crate::bindings::recipe::exports::cairn::plugin::recipe::Guest as RecipeGuest;
    pub use crate::bindings::validator as validator_bindings;
    pub use crate::bindings::validator::export_validator;
    pub use crate::bindings::validator::exports::cairn::plugin::validator::Guest as ValidatorGuest;
    pub use std::string::String;
    pub use std::vec::Vec;

    /// [`crate::Recipe::call`] as a function pointer.
    pub type RecipeFn = fn(&str, &[u8]) -> Result<Vec<u8>, String>;
    /// [`crate::Validator::validate`] as a function pointer.
    pub type ValidatorFn = fn(Vec<crate::Write>) -> Result<(), String>;

    /// The error a `recipe!` function list gives for a name it does not list.
    pub fn unknown_function(name: &str) -> String {
        format!("unknown function {name:?}")
    }
}
