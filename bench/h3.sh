#!/usr/bin/env bash
# HTTP/3 beside HTTP/2 on one raftlb https listener (http3 = true), measured
# by one client (h3load, tests/src/bin/h3load.rs, quinn and h3 for HTTP/3,
# hyper for HTTP/2 over TLS): CONNS connections x STREAMS requests in flight,
# closed loop, DURATION seconds a round, RUNS rounds, the order of the two
# protocols swapped each round. Two nginx backends answer "ok" as in run.sh.
# Prints each round, then the medians (req/s, p99, and raftlb's own CPU time
# per request from /proc, which does not depend on what the client costs),
# the h3/h2 ratio, and the goal of issue 22 (HTTP/3 req/s >= 0.8x HTTP/2)
# with a verdict.
#
# Env: DURATION=5 RUNS=5 CONNS=16 STREAMS=8 RAFTLB_BIN=target/release/raftlb
#      H3LOAD_BIN=target/release/h3load  SMOKE=1 (= DURATION=2 RUNS=1)
# Exit status: non-zero when a protocol does not answer "ok" (never on ratios).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "${SMOKE:-0}" == 1 ]] && { DURATION=2; RUNS=1; }
DURATION=${DURATION:-5} RUNS=${RUNS:-5} CONNS=${CONNS:-16} STREAMS=${STREAMS:-8}
RAFTLB_BIN=${RAFTLB_BIN:-target/release/raftlb}
H3LOAD_BIN=${H3LOAD_BIN:-target/release/h3load}
PORT=8443 RAFT=7098
log() { printf '[h3] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $RAFTLB_BIN ]] || { log "building raftlb"; cargo build --release -p raftlb-node >&2; }
[[ -x $H3LOAD_BIN ]] || { log "building h3load"; cargo build --release -p raftlb-tests --bin h3load >&2; }
command -v nginx >/dev/null || die "nginx is needed for the backends (apt-get install nginx-light)"

DIR=$(mktemp -d /tmp/raftlb-h3.XXXXXX)
mkdir -p "$DIR/logs" "$DIR/run" "$DIR/tmp" "$DIR/data"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

for n in 1 2; do
    sed "s#BENCH_DIR#$DIR#g; s/backendN/backend$n/g; s/bN_/b${n}_/g; s/PORT/900$n/" bench/conf/backend.conf \
        >"$DIR/backend$n.conf"
    nginx -c "$DIR/backend$n.conf" >"$DIR/logs/backend$n.out" 2>&1 &
    PIDS+=($!)
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench.local -addext subjectAltName=DNS:bench.local \
    -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null || die "openssl failed"
cat >"$DIR/raftlb.toml" <<EOF
[node]
id = 1
data_dir = "$DIR/data"

[cluster]
id = "bench-h3"
insecure_cleartext = true
raft = "127.0.0.1:$RAFT"
peers = { 1 = "127.0.0.1:$RAFT" }

[[certificate]]
name = "bench"
cert = "$DIR/cert.pem"
key = "$DIR/key.pem"

[[listener]]
name = "web"
protocol = "https"
bind = "127.0.0.1:$PORT"
pool = "app"
http3 = true
access_log = false

[listener.limits]
connections = 1000000
connection_rate = 10000000
request_rate = 10000000

[[pool]]
name = "app"
algorithm = "round_robin"
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
EOF
RAFTLB_WORKER_THREADS=2 "$RAFTLB_BIN" run --config "$DIR/raftlb.toml" >"$DIR/logs/raftlb.out" 2>&1 &
RAFTLB_PID=$!
PIDS+=($RAFTLB_PID)
# CPU ticks (user + system) raftlb has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$RAFTLB_PID/stat"; }
TICK=$(getconf CLK_TCK)

load() {   # load PROTOCOL SECONDS CONNS STREAMS -> one JSON line
    "$H3LOAD_BIN" --protocol "$1" --connect "127.0.0.1:$PORT" --host bench.local \
        --duration "$2" --connections "$3" --streams "$4"
}
deadline=$((SECONDS + 20))
until load h3 1 1 1 2>/dev/null | grep -q '"errors": 0' && load h2 1 1 1 2>/dev/null | grep -q '"errors": 0'; do
    ((SECONDS < deadline)) || { tail -n 20 "$DIR/logs/raftlb.out" >&2; die "raftlb does not answer h3 and h2"; }
    sleep 0.5
done

field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A RPS=() P99=() CPU=()
for ((r = 1; r <= RUNS; r++)); do
    order=(h3 h2); ((r % 2 == 0)) && order=(h2 h3)
    for p in "${order[@]}"; do
        before=$(cpu_ticks)
        line=$(load "$p" "$DURATION" "$CONNS" "$STREAMS")
        used=$(($(cpu_ticks) - before))
        # raftlb's CPU per request, µs: independent of how much the client costs.
        us=$(awk -v t="$used" -v hz="$TICK" -v n="$(field requests <<<"$line")" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }')
        log "round $r $p: $line, raftlb cpu ${us} us/req"
        [[ $(field errors <<<"$line") == 0 ]] || log "$p: errors in round $r"
        RPS[$p]+="$(field rps <<<"$line") " P99[$p]+="$(field p99_ms <<<"$line") " CPU[$p]+="$us "
    done
done
printf '%-8s %12s %10s %18s\n' protocol "req/s" "p99 ms" "raftlb cpu us/req"
for p in h3 h2; do
    printf '%-8s %12s %10s %18s\n' "$p" "$(tr ' ' '\n' <<<"${RPS[$p]}" | grep . | median)" \
        "$(tr ' ' '\n' <<<"${P99[$p]}" | grep . | median)" "$(tr ' ' '\n' <<<"${CPU[$p]}" | grep . | median)"
done
h3=$(tr ' ' '\n' <<<"${RPS[h3]}" | grep . | median) h2=$(tr ' ' '\n' <<<"${RPS[h2]}" | grep . | median)
ratio=$(awk -v a="$h3" -v b="$h2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8 ? "MET" : "not met") }')
echo "goal (issue 22): HTTP/3 req/s >= 0.8x HTTP/2 on one listener: h3/h2 = $ratio ($CONNS connections x $STREAMS streams, median of $RUNS rounds of ${DURATION}s) -> $verdict"
