//! The Cairn node: configuration, the write path into the kernel, and the gRPC services.
//!
//! It serves etcd's client API: it converts etcd's wire messages to the kernel's plain types,
//! sends writes through the member's Raft replica, and serves reads from the local kernel once
//! the replica says they are linearizable (or straight away, for serializable reads). It also
//! serves etcd's lock and election services and Cairn's own, over the plugins bundled in the
//! binary.

mod authority;
mod bundled;
mod cluster;
pub mod config;
mod convert;
mod election;
mod identity;
mod kv;
mod lease;
mod lessor;
mod lock;
mod maintenance;
pub mod manifest_file;
mod node;
mod plugin_dir;
mod plugins;
mod recipe_call;
pub mod server;
mod status;
mod waiting_line;
mod watch;
