#!/usr/bin/env bash
# Installs what building and testing Cairn needs on a Debian machine; does nothing when it is
# all there already.
#   clang, libclang-dev       RocksDB's Rust bindings are generated with libclang
#   protobuf-compiler,        protoc and the well-known .proto files, which the etcd-client
#   libprotobuf-dev           crate (a real etcd client the tests use) compiles its API with
#   etcd-server, etcd-client  the real etcd 3.4 and etcdctl that compatibility tests and
#                             benchmarks run side by side with cairn
#   wasm32-unknown-unknown    the Rust target plugins are compiled for (added with rustup)
set -euo pipefail

packages=(clang libclang-dev protobuf-compiler libprotobuf-dev etcd-server etcd-client)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust with rustup first" >&2
  exit 1
fi

if [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown" ]; then
  if ! command -v rustup >/dev/null; then
    echo "setup: the wasm32-unknown-unknown target is missing and rustup is not there to add it" >&2
    exit 1
  fi
  echo "setup: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
