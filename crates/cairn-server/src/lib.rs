//! The Cairn node: configuration, the write path into the kernel, and the gRPC services.
//!
//! It serves etcd's client API: it converts etcd's wire messages to the kernel's plain types,
//! sends writes through the member's Raft replica, and serves reads from the local kernel once
//! the replica says they are linearizable (or straight away, for serializable reads).

mod authority;
mod cluster;
pub mod config;
mod convert;
mod identity;
mod kv;
mod lease;
mod lessor;
mod maintenance;
pub mod manifest_file;
mod node;
mod plugin_dir;
mod plugins;
pub mod server;
mod status;
mod watch;
