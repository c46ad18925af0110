//! Builds the bundled plugins of `plugins/` into components for `src/lib.rs` to embed.
//!
//! The plugins are compiled by a nested cargo for wasm32 (through cairn-plugin-build, so the
//! bytes are reproducible and the same as `cairn-plugin-build` gives by hand). It uses a target
//! directory of its own beside the outer build's: sharing the outer one would wait forever on
//! the lock the outer cargo holds.

use std::path::{Path, PathBuf};

use cairn_plugin_build::Builder;

/// The bundled plugins: each is the package of the same name under `plugins/`.
const PLUGINS: &[&str] = &["lock", "election", "discovery", "queue", "schema"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .ancestors()
        .nth(2)
        .expect("crates/cairn-bundled lies two levels below the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    for watched in ["plugins", "crates/cairn-plugin-sdk", "wit", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let builder = Builder::new(&workspace).target_dir(nested_target_dir(&out_dir));
    for plugin in PLUGINS {
        let component = builder
            .build(plugin)
            .unwrap_or_else(|error| panic!("building the bundled plugin {plugin}: {error}"));
        let path = out_dir.join(format!("{plugin}.wasm"));
        std::fs::write(&path, component)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    }
}

/// `bundled-plugins` in the outer build's target directory (the nearest ancestor of `OUT_DIR`
/// that cargo marked with `CACHEDIR.TAG`), so the nested build is cached with the outer one; in
/// `OUT_DIR` itself when there is no such ancestor.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or(out_dir)
        .join("bundled-plugins")
}
