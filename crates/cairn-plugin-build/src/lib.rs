//! Builds Cairn plugin crates into WebAssembly components.
//!
//! A plugin is a `cdylib` crate of the workspace that uses `cairn-plugin-sdk`. [`Builder::build`]
//! compiles it with cargo for `wasm32-unknown-unknown` and [`componentize`] wraps the core module
//! in a component, from the WIT that wit-bindgen embedded in it. Components are identified by
//! their digest once deployed, so the build is reproducible: the bytes depend on the sources, the
//! lock file and the toolchain, not on where the checkout or cargo's registry live.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The target plugins are compiled for: plain WebAssembly, which imports nothing the SDK does
/// not declare (no WASI), so the component imports only `cairn:plugin` interfaces.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Why a plugin could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("could not run {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("{command} failed ({status})")]
    Failed { command: String, status: ExitStatus },
    #[error("cargo produced no .wasm for {package}; is its crate-type cdylib?")]
    NoArtifact { package: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    NotACrate { path: PathBuf, reason: String },
    /// wit-component's reason, with its whole chain of causes.
    #[error("could not make a component: {0}")]
    Componentize(String),
}

/// Builds plugin packages of one cargo workspace.
#[derive(Debug, Clone)]
pub struct Builder {
    cargo: OsString,
    workspace_dir: PathBuf,
    target_dir: Option<PathBuf>,
}

impl Builder {
    /// A builder for the workspace rooted at `workspace_dir`, running the cargo named by `$CARGO`
    /// (set when running under cargo) or else `cargo`, with cargo's own choice of target
    /// directory (`$CARGO_TARGET_DIR`, usually).
    pub fn new(workspace_dir: impl Into<PathBuf>) -> Self {
        Builder {
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            workspace_dir: workspace_dir.into(),
            target_dir: None,
        }
    }

    /// Builds into `target_dir` instead of cargo's default.
    pub fn target_dir(mut self, target_dir: impl Into<PathBuf>) -> Self {
        self.target_dir = Some(target_dir.into());
        self
    }

    /// Compiles `package` in release mode and returns it as a component.
    pub fn build(&self, package: &str) -> Result<Vec<u8>, BuildError> {
        let core = self.compile(package)?;
        let bytes = std::fs::read(&core).map_err(|source| BuildError::Io {
            path: core.clone(),
            source,
        })?;
        componentize(&bytes)
    }

    /// Runs cargo and returns the path of the core module it wrote. One package per cargo run:
    /// cargo unifies features across the packages of one build, so building plugins together
    /// could change one plugin's bytes depending on which others came along.
    fn compile(&self, package: &str) -> Result<PathBuf, BuildError> {
        let mut command = Command::new(&self.cargo);
        command
            .current_dir(&self.workspace_dir)
            .args([
                "build",
                "--release",
                "--target",
                TARGET,
                "--package",
                package,
            ])
            .arg("--message-format=json-render-diagnostics")
            .env("CARGO_ENCODED_RUSTFLAGS", self.rustflags().join("\x1f"))
            // Set when this runs inside `cargo clippy` (as a build script): the plugin is
            // compiled, not linted.
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(target_dir) = &self.target_dir {
            command.env("CARGO_TARGET_DIR", target_dir);
        }
        let description = format!("cargo build --target {TARGET} --package {package}");
        let output = command.output().map_err(|source| BuildError::Spawn {
            command: description.clone(),
            source,
        })?;
        if !output.status.success() {
            return Err(BuildError::Failed {
                command: description,
                status: output.status,
            });
        }
        wasm_artifact(&output.stdout).ok_or_else(|| BuildError::NoArtifact {
            package: package.to_owned(),
        })
    }

    /// The compiler flags that make the output independent of where things live on this machine.
    /// They replace any `RUSTFLAGS` or configured flags, which could change the bytes, and apply
    /// only to the wasm code: with `--target` cargo builds proc macros and build scripts without
    /// them.
    fn rustflags(&self) -> Vec<String> {
        let mut flags = vec![
            remap(&self.workspace_dir, "/cairn"),
            // Debug info would be most of the component and carries paths; traps are reported
            // with the function names of the name section, which stays.
            "-Cdebuginfo=0".to_owned(),
            "-Cstrip=debuginfo".to_owned(),
        ];
        if let Some(cargo_home) = cargo_home() {
            flags.push(remap(&cargo_home, "/cargo"));
        }
        flags
    }
}

/// A `--remap-path-prefix` flag replacing `from` with `to` in every path rustc embeds.
fn remap(from: &Path, to: &str) -> String {
    format!("--remap-path-prefix={}={to}", from.display())
}

/// Where cargo keeps downloaded crate sources (under `registry/src`, `git/checkouts`).
fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
}

/// The `.wasm` file among the artifacts cargo reported in its JSON messages.
fn wasm_artifact(messages: &[u8]) -> Option<PathBuf> {
    messages
        .split(|&byte| byte == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .flat_map(|message| match &message["filenames"] {
            serde_json::Value::Array(names) => names.clone(),
            _ => Vec::new(),
        })
        .filter_map(|name| name.as_str().map(PathBuf::from))
        .find(|name| name.extension().is_some_and(|ext| ext == "wasm"))
}

/// Wraps a core module built with `cairn-plugin-sdk` into a component, with the imports and
/// exports described by the WIT that wit-bindgen embedded in it, and validates the result.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>, BuildError> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core)
        .and_then(|mut encoder| encoder.encode())
        .map_err(|error| BuildError::Componentize(format!("{error:#}")))
}

/// The package to build for a command-line argument: a crate directory (anything containing a
/// path separator, or naming a directory with a `Cargo.toml`) gives its package's name, anything
/// else is taken as a package name.
pub fn package_name(argument: &str) -> Result<String, BuildError> {
    let dir = Path::new(argument);
    let manifest = dir.join("Cargo.toml");
    if !argument.contains(std::path::MAIN_SEPARATOR) && !manifest.is_file() {
        return Ok(argument.to_owned());
    }
    let text = std::fs::read_to_string(&manifest).map_err(|source| BuildError::Io {
        path: manifest.clone(),
        source,
    })?;
    let not_a_crate = |reason: String| BuildError::NotACrate {
        path: manifest.clone(),
        reason,
    };
    let parsed: toml::Table = text.parse().map_err(|e| not_a_crate(format!("{e}")))?;
    parsed
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(|name| name.as_str())
        .map(str::to_owned)
        .ok_or_else(|| not_a_crate("no package.name".to_owned()))
}

/// The root of the cargo workspace containing `dir`.
pub fn workspace_root(dir: &Path) -> Result<PathBuf, BuildError> {
    let command = "cargo locate-project --workspace";
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(dir)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| BuildError::Spawn {
            command: command.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(BuildError::Failed {
            command: command.to_owned(),
            status: output.status,
        });
    }
    let manifest = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim_end());
    Ok(manifest.parent().map(Path::to_path_buf).unwrap_or(manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_wasm_among_cargo_messages() {
        let messages =
            br#"{"reason":"compiler-artifact","filenames":["/t/libcairn_plugin_sdk.rlib"]}
{"reason":"compiler-artifact","filenames":["/t/counter.wasm"]}
{"reason":"build-finished","success":true}
"#;
        assert_eq!(
            wasm_artifact(messages),
            Some(PathBuf::from("/t/counter.wasm"))
        );
        assert_eq!(wasm_artifact(b"{\"reason\":\"build-finished\"}\n"), None);
    }

    #[test]
    fn package_names_and_crate_directories() {
        assert_eq!(package_name("counter").unwrap(), "counter");
        let here = env!("CARGO_MANIFEST_DIR");
        assert_eq!(package_name(here).unwrap(), "cairn-plugin-build");
    }

    #[test]
    fn refuses_imports_the_metadata_does_not_describe() {
        // A core module importing `env::f: func()`, which no WIT world declares.
        let module = b"\0asm\x01\0\0\0\
            \x01\x04\x01\x60\0\0\
            \x02\x09\x01\x03env\x01f\0\0";
        let error = componentize(module).unwrap_err();
        assert!(matches!(error, BuildError::Componentize(_)), "{error}");
    }
}
