#!/usr/bin/env bash
# The whole test suite: installs system dependencies, builds the release broker the
# integration tests start, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# One build from a clean tree: incremental caches would only cost disk (several GB).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
cargo build --release -p shardlog-broker --bin shardlog
export SHARDLOG_BIN="$PWD/target/release/shardlog"
cargo test --workspace "$@"
