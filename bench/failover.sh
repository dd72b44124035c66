#!/usr/bin/env bash
# VIP failover, raftlb beside keepalived, in the same kind of network
# namespaces with the same client (a new connection every 5 ms) and the same
# ARP prober. Each trial kill -9s every balancer process on the VIP owner's
# host; the figure is the time from the kill to the first answer through the
# VIP, and the ARP overlap is how long two hosts answered for the VIP at once.
#   TRIALS (default 30)
#   RAFTLB_HEARTBEAT_INTERVAL / RAFTLB_ELECTION_TIMEOUT (default 15ms / 50ms:
#   the timings a LAN deployment would tune to; the test suite uses the
#   defaults 50ms / 150ms)
# Needs root, ip, nft, keepalived and nginx (apt-get install keepalived nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${TRIALS:-30}"
export RAFTLB_HEARTBEAT_INTERVAL="${RAFTLB_HEARTBEAT_INTERVAL:-15ms}"
export RAFTLB_ELECTION_TIMEOUT="${RAFTLB_ELECTION_TIMEOUT:-50ms}"
for tool in ip nft keepalived nginx; do
  command -v "$tool" >/dev/null || { echo "failover bench: $tool is missing" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "failover bench: needs root (network namespaces)" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p raftlb-node --bin raftlb
log="$(mktemp)"
RAFTLB_FAILOVER_TRIALS="$trials" RAFTLB_BIN="$target/release/raftlb" \
  cargo test --release -p raftlb-tests --test vip a_killed_owner -- --nocapture >"$log" 2>&1 \
  || { cat "$log"; exit 1; }
RAFTLB_FAILOVER_TRIALS="$trials" \
  cargo test --release -p raftlb-tests --test keepalived -- --ignored --nocapture >>"$log" 2>&1 \
  || { cat "$log"; exit 1; }
echo "VIP failover, $trials trials each (raftlb: heartbeat $RAFTLB_HEARTBEAT_INTERVAL, election timeout $RAFTLB_ELECTION_TIMEOUT)"
grep -E "^(kill -9 of the VIP owner|keepalived:)" "$log" | sed 's/^kill -9/raftlb: kill -9/'
rm -f "$log"
