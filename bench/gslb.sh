#!/usr/bin/env bash
# GSLB answers/s: one standalone raftlb with a [gslb] zone on loopback,
# asked by dnsload (tests/src/bin/dnsload.rs: SOCKETS UDP sockets, WINDOW
# queries in flight on each, closed loop) for DURATION seconds a round,
# RUNS rounds, for a failover name and a geo name (regions by the client's
# address). Prints each round and the median answers/s per name. The site
# failover time is measured by tests/tests/gslb.rs (its FIGURE lines).
#
# Env: DURATION=5 RUNS=3 SOCKETS=4 WINDOW=16 RAFTLB_BIN=target/release/raftlb
#      DNSLOAD_BIN=target/release/dnsload RAFTLB_WORKER_THREADS=2
# Exit status: non-zero when the server does not answer.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5} RUNS=${RUNS:-3} SOCKETS=${SOCKETS:-4} WINDOW=${WINDOW:-16}
RAFTLB_BIN=${RAFTLB_BIN:-target/release/raftlb}
DNSLOAD_BIN=${DNSLOAD_BIN:-target/release/dnsload}
PORT=${PORT:-5399}
log() { printf '[gslb] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $RAFTLB_BIN ]] || { log "building raftlb"; cargo build --release -p raftlb-node >&2; }
[[ -x $DNSLOAD_BIN ]] || { log "building dnsload"; cargo build --release -p raftlb-tests --bin dnsload >&2; }

DIR=$(mktemp -d /tmp/raftlb-gslb.XXXXXX)
PID=
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

cat >"$DIR/raftlb.toml" <<TOML
[node]
id = 1
data_dir = "$DIR/data"

[gslb]
bind = "127.0.0.1:$PORT"
zone = "gslb.test"
ns = ["ns1.gslb.test"]
default_region = "eu"

[[gslb.regions]]
cidr = "127.0.0.0/8"
region = "us"

[[gslb.names]]
name = "www.gslb.test"

[[gslb.names.sites]]
name = "primary"
address = "198.18.1.1"

[[gslb.names.sites]]
name = "secondary"
address = "198.18.2.1"

[[gslb.names]]
name = "geo.gslb.test"
policy = "geo"

[[gslb.names.sites]]
name = "eu"
address = "198.18.1.1"
region = "eu"

[[gslb.names.sites]]
name = "us"
address = "198.18.2.1"
region = "us"
TOML
RAFTLB_WORKER_THREADS=${RAFTLB_WORKER_THREADS:-2} "$RAFTLB_BIN" run --config "$DIR/raftlb.toml" >"$DIR/raftlb.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
    "$DNSLOAD_BIN" --connect "127.0.0.1:$PORT" --sockets 1 --window 1 --duration 1 2>/dev/null |
        grep -q '"answers": [1-9]' && break
    sleep 0.1
done
"$DNSLOAD_BIN" --connect "127.0.0.1:$PORT" --sockets 1 --window 1 --duration 1 | grep -q '"answers": [1-9]' ||
    { cat "$DIR/raftlb.log" >&2; die "raftlb does not answer DNS"; }

declare -A results
for run in $(seq "$RUNS"); do
    for name in www.gslb.test geo.gslb.test; do
        line=$("$DNSLOAD_BIN" --connect "127.0.0.1:$PORT" --name "$name" --sockets "$SOCKETS" \
            --window "$WINDOW" --duration "$DURATION")
        log "round $run $name: $line"
        rate=$(sed -E 's/.*"answers_per_s": ([0-9]+).*/\1/' <<<"$line")
        results[$name]+="$rate "
    done
done
for name in www.gslb.test geo.gslb.test; do
    median=$(tr ' ' '\n' <<<"${results[$name]}" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf 'gslb %-14s median %s answers/s (%s sockets x %s in flight, %s x %s s)\n' \
        "$name" "$median" "$SOCKETS" "$WINDOW" "$RUNS" "$DURATION"
done
