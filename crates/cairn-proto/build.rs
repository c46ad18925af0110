//! Generates the wire types with a pure-Rust protobuf compiler (protox), so building Cairn needs
//! no system `protoc`.

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "etcd/etcdserverpb/rpc.proto",
    "etcd/authpb/auth.proto",
    "cairn/v1/peer.proto",
    "cairn/v1/plugin.proto",
    "cairn/v1/lock.proto",
    "etcd/v3lockpb/v3lock.proto",
    "etcd/v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
