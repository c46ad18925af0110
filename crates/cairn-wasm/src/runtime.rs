//! [`WasmRuntime`]: the kernel's [`PluginRuntime`] over wasmtime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cairn_kernel::plugin::{
    Digest, Exports, LoadedPlugin, PluginFailure, PluginHost, PluginRuntime, ProposedWrite,
};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, Trap};

use crate::bindings::recipe::{RecipePlugin, RecipePluginPre};
use crate::bindings::validator::ValidatorPluginPre;
use crate::bindings::validator::exports::cairn::plugin::validator::Write;
use crate::engine::{self, WASMTIME_VERSION};
use crate::host::CallState;

/// The only imports a plugin may have: `cairn:plugin`'s host interfaces.
const ALLOWED_IMPORTS: [&str; 4] = [
    "cairn:plugin/kv@0.1.0",
    "cairn:plugin/context@0.1.0",
    "cairn:plugin/random@0.1.0",
    "cairn:plugin/log@0.1.0",
];
const RECIPE_EXPORT: &str = "cairn:plugin/recipe@0.1.0";
const VALIDATOR_EXPORT: &str = "cairn:plugin/validator@0.1.0";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("starting wasmtime: {0}")]
    Engine(String),
    #[error("plugin cache directory {path}: {source}")]
    CacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs plugin components. One per member, shared by apply and read-only calls.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    compiled: Mutex<HashMap<Digest, Arc<Compiled>>>,
    cache_dir: Option<PathBuf>,
    engine_name: String,
}

/// A component compiled and linked, ready to instantiate for a call.
struct Compiled {
    recipe: Option<RecipePluginPre<CallState>>,
    validator: Option<ValidatorPluginPre<CallState>>,
}

impl WasmRuntime {
    /// A runtime that keeps compiled components in `cache_dir`, when given, so that a restart
    /// does not compile them again.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<WasmRuntime, RuntimeError> {
        let engine = engine::engine().map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        RecipePlugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let cache_dir = cache_dir.map(|dir| dir.join(format!("wasmtime-{WASMTIME_VERSION}")));
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::CacheDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(WasmRuntime {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
            cache_dir,
            engine_name: engine::engine_name(),
        })
    }

    fn compiled(&self, digest: Digest, bytes: &[u8]) -> Result<Arc<Compiled>, String> {
        if let Some(compiled) = self.compiled.lock().expect("cache lock").get(&digest) {
            return Ok(compiled.clone());
        }
        let compiled = Arc::new(self.compile(digest, bytes)?);
        self.compiled
            .lock()
            .expect("cache lock")
            .insert(digest, compiled.clone());
        Ok(compiled)
    }

    fn compile(&self, digest: Digest, bytes: &[u8]) -> Result<Compiled, String> {
        let component = self.component(digest, bytes)?;
        let ty = component.component_type();
        if let Some((name, _)) = ty
            .imports(&self.engine)
            .find(|(name, _)| !ALLOWED_IMPORTS.contains(name))
        {
            return Err(format!(
                "it imports {name}, which is outside cairn:plugin@0.1.0; a plugin may import only \
                 {}",
                ALLOWED_IMPORTS.join(", ")
            ));
        }
        let exported = |wanted: &str| ty.exports(&self.engine).any(|(name, _)| name == wanted);
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("it cannot be linked: {e}"))?;
        let recipe = exported(RECIPE_EXPORT)
            .then(|| RecipePluginPre::new(pre.clone()))
            .transpose()
            .map_err(|e| format!("its {RECIPE_EXPORT} export does not match: {e}"))?;
        let validator = exported(VALIDATOR_EXPORT)
            .then(|| ValidatorPluginPre::new(pre))
            .transpose()
            .map_err(|e| format!("its {VALIDATOR_EXPORT} export does not match: {e}"))?;
        Ok(Compiled { recipe, validator })
    }

    /// Compiles `bytes`, or takes the compiled code from the disk cache.
    fn component(&self, digest: Digest, bytes: &[u8]) -> Result<Component, String> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.cwasm", digest.to_hex())));
        if let Some(path) = cached.as_ref().filter(|path| path.exists()) {
            // SAFETY: this runtime wrote the file with `Component::serialize` for this wasmtime
            // version; wasmtime refuses code compiled for another engine configuration.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(%error, path = %path.display(), "recompiling"),
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| format!("it is not a valid component: {e:#}"))?;
        if let Some(path) = cached
            && let Err(error) = cache(&component, &path)
        {
            tracing::warn!(%error, path = %path.display(), "could not cache compiled plugin");
        }
        Ok(component)
    }

    /// The compiled component of a deployed plugin. Deploy compiled it once already, so failing
    /// now is this member's problem (memory, say), not the plugin's result.
    fn deployed(&self, plugin: &LoadedPlugin<'_>) -> Result<Arc<Compiled>, PluginFailure> {
        self.compiled(plugin.digest, plugin.component)
            .map_err(|reason| {
                PluginFailure::Runtime(format!("recompiling {}: {reason}", plugin.digest))
            })
    }

    /// A store for one call, fuelled and limited.
    fn store(&self, plugin: &LoadedPlugin<'_>, host: &mut dyn PluginHost) -> Store<CallState> {
        // SAFETY: every caller drops the store before returning, so before `host`'s borrow ends.
        let state = unsafe { CallState::new(host, plugin.limits.memory_bytes, plugin.limits.fuel) };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store
            .set_fuel(plugin.limits.fuel)
            .expect("fuel is enabled in the engine");
        store
    }
}

impl PluginRuntime for WasmRuntime {
    fn engine(&self) -> &str {
        &self.engine_name
    }

    fn load(&self, digest: Digest, component: &[u8]) -> Result<Exports, String> {
        self.compiled(digest, component).map(|c| Exports {
            recipe: c.recipe.is_some(),
            validator: c.validator.is_some(),
        })
    }

    fn call(
        &self,
        plugin: &LoadedPlugin<'_>,
        function: &str,
        input: &[u8],
        host: &mut dyn PluginHost,
    ) -> Result<Vec<u8>, PluginFailure> {
        let compiled = self.deployed(plugin)?;
        let Some(pre) = &compiled.recipe else {
            return Err(PluginFailure::NoSuchFunction(function.to_string()));
        };
        let mut store = self.store(plugin, host);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|error| instantiation_failure(error, &mut store, plugin))?;
        let result = instance
            .cairn_plugin_recipe()
            .call_call(&mut store, function, input);
        match result {
            Ok(Ok(output)) if output.len() as u64 > plugin.limits.output_bytes => {
                Err(PluginFailure::OutputTooLarge {
                    size: output.len() as u64,
                    limit: plugin.limits.output_bytes,
                })
            }
            Ok(Ok(output)) => Ok(output),
            Ok(Err(reason)) => Err(PluginFailure::Returned(bounded(reason))),
            Err(error) => Err(failure(error, &mut store, plugin)),
        }
    }

    fn validate(
        &self,
        plugin: &LoadedPlugin<'_>,
        writes: &[ProposedWrite],
        host: &mut dyn PluginHost,
    ) -> Result<Result<(), String>, PluginFailure> {
        let compiled = self.deployed(plugin)?;
        let Some(pre) = &compiled.validator else {
            return Ok(Err("the plugin exports no validator".into()));
        };
        let writes: Vec<Write> = writes
            .iter()
            .map(|w| Write {
                key: w.key.clone(),
                value: w.value.clone(),
            })
            .collect();
        let mut store = self.store(plugin, host);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|error| instantiation_failure(error, &mut store, plugin))?;
        match instance
            .cairn_plugin_validator()
            .call_validate(&mut store, &writes)
        {
            Ok(verdict) => Ok(verdict.map_err(bounded)),
            Err(error) => Err(failure(error, &mut store, plugin)),
        }
    }
}

/// Longest reason a plugin may give; the rest is cut. Reasons travel in gRPC status messages.
const REASON_BYTES_MAX: usize = 1024;

fn bounded(mut reason: String) -> String {
    if reason.len() > REASON_BYTES_MAX {
        let mut end = REASON_BYTES_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// Writes compiled code aside, fsyncs it and renames it into place, so that a reader never maps
/// a file being written, and a crash leaves the old file or the new one, never half of one.
fn cache(component: &Component, path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let code = component.serialize().map_err(std::io::Error::other)?;
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(&code)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// Why instantiation failed: a start function may trap or exhaust fuel like any call, and that is
/// a result; anything else (the pool exhausted, memory not mapped) is this member's failure.
fn instantiation_failure(
    error: wasmtime::Error,
    store: &mut Store<CallState>,
    plugin: &LoadedPlugin<'_>,
) -> PluginFailure {
    let data = store.data();
    if error.downcast_ref::<Trap>().is_some() || data.limiter.denied || data.host_budget_spent {
        failure(error, store, plugin)
    } else {
        PluginFailure::Runtime(format!("instantiating {}: {error:#}", plugin.digest))
    }
}

/// Names why a call stopped, from what stopped it: the store failing under it, fuel, the memory
/// limit, or the trap itself. Errors that are not traps come from lifting what the guest
/// returned (a bad string, say): the guest's fault, and the same on every replica.
fn failure(
    error: wasmtime::Error,
    store: &mut Store<CallState>,
    plugin: &LoadedPlugin<'_>,
) -> PluginFailure {
    if let Some(storage) = store.data_mut().storage_error.take() {
        return PluginFailure::Storage(storage);
    }
    if store.data().host_budget_spent {
        return PluginFailure::OutOfFuel(plugin.limits.fuel);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginFailure::OutOfFuel(plugin.limits.fuel),
        _ if store.data().limiter.denied => PluginFailure::MemoryLimit(plugin.limits.memory_bytes),
        Some(trap) => PluginFailure::Trap(trap.to_string()),
        None => PluginFailure::Trap(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_component_is_refused_with_the_reason() {
        let runtime = WasmRuntime::new(None).unwrap();
        let garbage = runtime
            .load(Digest::of(b"garbage"), b"garbage")
            .unwrap_err();
        assert!(garbage.contains("not a valid component"), "{garbage}");
        // A core module (the empty one) is not a component either.
        let core = b"\0asm\x01\0\0\0";
        let refused = runtime.load(Digest::of(core), core).unwrap_err();
        assert!(refused.contains("not a valid component"), "{refused}");
        assert_eq!(
            runtime.engine(),
            format!("wasmtime 48.0.8 {}", std::env::consts::ARCH)
        );
    }
}
