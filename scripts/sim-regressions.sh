#!/usr/bin/env bash
# Shows that the deterministic simulator finds each bug in sim/regressions/ when its fix is
# taken out: every patch there reverts one fix in the broker's replication or controller rules,
# or in the simulator's copy of the group coordinator glue (sim/src/group.rs). For each, in
# a scratch worktree of HEAD, the patch is applied, shardlog-sim is built and run over SEEDS
# seeds (default 1000); the script prints the first failing seed, how many failed, and exits
# non-zero if a bug went unnoticed. Run from anywhere: scripts/sim-regressions.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seeds=${SEEDS:-1000}
work=$(mktemp -d)
cleanup() {
    git -C "$root" worktree remove --force "$work/tree" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
git -C "$root" worktree add --detach -q "$work/tree" HEAD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/sim-regressions}"
sim="$CARGO_TARGET_DIR/debug/shardlog-sim"
missed=0
for patch in "$root"/sim/regressions/*.patch; do
    name=$(basename "$patch" .patch)
    git -C "$work/tree" checkout -q -- .
    if ! git -C "$work/tree" apply "$patch"; then
        echo "$name: the patch no longer applies to HEAD; regenerate it" >&2
        missed=1
        continue
    fi
    (cd "$work/tree" && cargo build -q -p shardlog-sim)
    first=$("$sim" --seeds "$seeds" | head -1 || true)
    count=$("$sim" --seeds "$seeds" --all | tail -1 || true)
    case "$first" in
        *FAILED*) echo "$name: found. $first | $count" ;;
        *) echo "$name: NOT FOUND in $seeds seeds ($first)"; missed=1 ;;
    esac
done
exit "$missed"
