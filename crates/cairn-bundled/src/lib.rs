//! The plugins that ship inside the `cairn` binary: every server deploys them at start (see
//! cairn-server's `bundled` module), and the etcd v3lock and v3election services run on them.
//!
//! Their sources are the crates under `plugins/`; the build script compiles them into components
//! and this crate embeds the bytes, so a binary always carries the versions it was built with.

/// One bundled plugin.
#[derive(Debug, Clone, Copy)]
pub struct BundledPlugin {
    /// The name it is deployed under, which is also its crate's name.
    pub name: &'static str,
    /// The version it is deployed as: Cairn's.
    pub version: &'static str,
    /// The component.
    pub component: &'static [u8],
    /// Its manifest, in the TOML of `--plugin-dir` manifests.
    pub manifest: &'static str,
}

pub const LOCK: BundledPlugin = BundledPlugin {
    name: "lock",
    version: env!("CARGO_PKG_VERSION"),
    component: include_bytes!(concat!(env!("OUT_DIR"), "/lock.wasm")),
    manifest: include_str!("../../../plugins/lock/lock.toml"),
};

pub const ELECTION: BundledPlugin = BundledPlugin {
    name: "election",
    version: env!("CARGO_PKG_VERSION"),
    component: include_bytes!(concat!(env!("OUT_DIR"), "/election.wasm")),
    manifest: include_str!("../../../plugins/election/election.toml"),
};

/// Every bundled plugin.
pub const ALL: &[BundledPlugin] = &[LOCK, ELECTION];
