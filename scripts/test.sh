#!/usr/bin/env bash
# The whole test suite: installs system dependencies, checks formatting and clippy's lints,
# builds the release broker the integration tests start, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# One build from a clean tree: incremental caches would only cost disk (several GB).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# Style and lints are part of the suite: unformatted code or any clippy warning fails it.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --release -p shardlog-broker --bin shardlog
export SHARDLOG_BIN="$PWD/target/release/shardlog"
cargo test --workspace "$@"
