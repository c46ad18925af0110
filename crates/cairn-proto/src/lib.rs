//! Wire types for Cairn's gRPC API.
//!
//! This crate exists so that exactly one place knows the wire format: the etcd v3 API
//! (`etcdserverpb`, `mvccpb`, `authpb`), which makes every etcd client work against Cairn, and
//! Cairn's own `cairn.v1` services. Everything is generated at build time from the `.proto`
//! files beside this crate; the node converts to and from the kernel's plain types at its edge.

/// etcd's multi-version key-value types: `KeyValue` and watch `Event`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's authentication types.
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd's v3 services and their request and response messages.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's server-side lock service.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's server-side election service.
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// Cairn's own services: plugins and the lock recipe for clients, and the transport between the
/// members of a cluster.
pub mod cairn_v1 {
    tonic::include_proto!("cairn.v1");
}
