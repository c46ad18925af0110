//! The plugins that ship inside the `cairn` binary: every server deploys them at start (see
//! cairn-server's `bundled` module): lock and election, which etcd's v3lock and v3election
//! services run on, discovery, queue, and the schema validator.
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

pub const DISCOVERY: BundledPlugin = BundledPlugin {
    name: "discovery",
    version: env!("CARGO_PKG_VERSION"),
    component: include_bytes!(concat!(env!("OUT_DIR"), "/discovery.wasm")),
    manifest: include_str!("../../../plugins/discovery/discovery.toml"),
};

pub const QUEUE: BundledPlugin = BundledPlugin {
    name: "queue",
    version: env!("CARGO_PKG_VERSION"),
    component: include_bytes!(concat!(env!("OUT_DIR"), "/queue.wasm")),
    manifest: include_str!("../../../plugins/queue/queue.toml"),
};

pub const SCHEMA: BundledPlugin = BundledPlugin {
    name: "schema",
    version: env!("CARGO_PKG_VERSION"),
    component: include_bytes!(concat!(env!("OUT_DIR"), "/schema.wasm")),
    manifest: include_str!("../../../plugins/schema/schema.toml"),
};

/// Every bundled plugin.
pub const ALL: &[BundledPlugin] = &[LOCK, ELECTION, DISCOVERY, QUEUE, SCHEMA];
