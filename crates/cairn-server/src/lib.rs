//! The Cairn node: configuration, the write path into the kernel, and the gRPC services.
//!
//! This is the only crate that knows gRPC: it converts etcd's wire messages to the kernel's
//! plain types, sends writes through one applier that batches them into shared fsyncs, and
//! serves reads straight from the kernel.

mod applier;
mod authority;
pub mod config;
mod convert;
mod identity;
mod kv;
mod maintenance;
mod node;
pub mod server;
mod status;
