# `make run` and `make test` each do all set-up first (scripts/setup.sh), so both work on a fresh
# Debian machine.
#
# Builds go to a cargo target directory outside the clone, so fresh clones (CI's among them)
# reuse earlier builds when the cache is there; an empty cache just means a cold build.
# Everything builds in release mode, and always with --workspace --all-targets: building only the
# binaries would resolve features without the dev-dependencies, give shared crates a different
# fingerprint and compile RocksDB a second time for the tests.
#
# Plugins (the example and the test plugins) are WebAssembly components built by
# cairn-plugin-build, which the workspace build compiles first; each lands in
# $(CARGO_TARGET_DIR)/plugins as PACKAGE.wasm, named after its cargo package.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/cairn/target
CARGO ?= cargo
CAIRN := $(CARGO_TARGET_DIR)/release/cairn
PLUGIN_DIR := $(CARGO_TARGET_DIR)/plugins
PLUGINS := examples/counter $(patsubst %/Cargo.toml,%,$(wildcard tests/plugins/*/Cargo.toml))

.PHONY: setup compile plugins build run test bench lint

setup:
	@scripts/setup.sh

compile: setup
	$(CARGO) build --release --workspace --all-targets

## The example and test plugins, as components in $(PLUGIN_DIR).
plugins: compile
	CARGO=$(CARGO) $(CARGO_TARGET_DIR)/release/cairn-plugin-build $(PLUGIN_DIR) $(PLUGINS)

build: compile plugins

## Start one node with its data in ./cairn-data, serving the etcd v3 API on 127.0.0.1:2379; it
## deploys the plugins built into the binary (lock, election, discovery, queue, schema).
run: build
	$(CAIRN) serve

## Every test: unit tests, etcdctl against cairn (KV, watch, lease, lock, elect), the differential
## test against a real etcd, crash durability, multi-process clusters (failover, membership,
## snapshots, partitions), plugins (determinism, validators, hot reload) and the bundled recipes
## (lock, election, discovery, queue, schema; the etcd-client crate's lock and election APIs),
## after building the plugins the tests deploy.
test: build
	CAIRN_BIN=$(CAIRN) CAIRN_TEST_COMPONENTS=$(PLUGIN_DIR) $(CARGO) test --release --workspace

## Side-by-side benchmark of cairn and etcd clusters (MEMBERS=1, the default, or 3; WORKLOADS picks
## the tables: kv, watch, failover, plugin, lock); prints the ratio tables.
bench: build
	bench/compare.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
