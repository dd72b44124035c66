#!/usr/bin/env bash
# The durability test's kill loop, long: KILLS (default 200) random kill -9s
# of a 3-node cluster under a stream of writes, against a release build.
# Every acknowledged write must be on every node afterwards. Not in CI
# (about 2 s per kill); the test suite runs the same loop with 20 kills.
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${1:-200}"
cargo build --release -p raftlb-node --bin raftlb
target="${CARGO_TARGET_DIR:-target}"
RAFTLB_KILLS="$kills" RAFTLB_BIN="$target/release/raftlb" \
  cargo test --release -p raftlb-tests --test durability random_kills -- --nocapture
