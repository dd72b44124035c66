#!/usr/bin/env bash
# raftlb benchmark harness: raftlb vs HAProxy vs nginx on loopback, in one run.
#
# Starts two nginx backends (127.0.0.1:9001, :9002) answering "ok", then for each
# scenario (http, tcp, https) starts HAProxy (:8080, 2 threads), nginx (:8081, 2
# workers) and raftlb (:8082, 2 worker threads), checks each answers "ok", and runs
# wrk against them interleaved, the order rotated each round (round 1: haproxy,
# nginx, raftlb; round 2: nginx, raftlb, haproxy; ...):
#   keep-alive req/s + p99 latency, and connection-per-request req/s (for https:
#   a full TLS handshake per request), and for https h2load's HTTP/2 req/s.
# https uses one ECDSA P-256 certificate for all three, TLS 1.3 (raftlb gets it
# with `raftlb ctl cert add` on a one-node cluster, as an operator would).
# Prints medians and raftlb/haproxy, raftlb/nginx ratios; raw wrk output and the
# table go to bench/results/<timestamp>/. Nothing is pinned: all shares the cores.
#
# Env: DURATION=10 RUNS=3 SCENARIOS="http tcp https" SMOKE=1 (=DURATION=2 RUNS=1)
#      RAFTLB_BIN=target/release/raftlb  BENCH_NO_BUILD=1 (never cargo build)
# Exit status: non-zero when a proxy fails its correctness check (never on ratios).
set -euo pipefail

cd "$(dirname "$0")/.."                      # repo root
CONF=bench/conf
if [[ "${SMOKE:-0}" == 1 ]]; then DURATION=2 RUNS=1; fi
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-http tcp https}
RAFTLB_BIN=${RAFTLB_BIN:-target/release/raftlb}
TARGETS=(haproxy nginx raftlb)
declare -A PORT=([haproxy]=8080 [nginx]=8081 [raftlb]=8082)
declare -A RES=()          # "scenario|target|metric" -> space-separated values
declare -a PIDS=()         # every process we started
FAILED=0

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- process management -----------------------------------------------------
stop_pid() {                # TERM, wait up to 5 s, then KILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_all() { local p; for p in "${PIDS[@]}"; do stop_pid "$p"; done; PIDS=(); }
cleanup() {
    trap - EXIT INT TERM
    [[ -n "${WRK_PID:-}" ]] && stop_pid "$WRK_PID"
    stop_all
    [[ -n "${OUT:-}" && -d "${BENCH_DIR:-}/logs" ]] && cp -r "$BENCH_DIR/logs" "$OUT/" 2>/dev/null
    [[ -n "${BENCH_DIR:-}" ]] && rm -rf "$BENCH_DIR"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM        # exit runs the EXIT trap

start() {                       # start NAME CMD... : background, logged, tracked
    local name=$1; shift
    "$@" >"$BENCH_DIR/logs/$name.out" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ok NAME PORT PID: poll until the port serves "ok" (10 s deadline); also
# requests a second time so both round-robin backends are exercised.
wait_ok() {
    local name=$1 port=$2 pid=$3 deadline=$((SECONDS + 10)) body scheme=${4:-http}
    until curl -kfsS --max-time 1 "$scheme://127.0.0.1:$port/" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
            log "$name: not serving on :$port"; tail -n 20 "$BENCH_DIR/logs/$name".* >&2 || true
            return 1
        fi
        sleep 0.1
    done
    for _ in 1 2; do
        body=$(curl -kfsS --max-time 2 "$scheme://127.0.0.1:$port/" 2>&1) || body="curl failed: $body"
        [[ "$body" == ok ]] || { log "$name: expected \"ok\", got \"$body\""; return 1; }
    done
}

render() { sed "s#BENCH_DIR#$BENCH_DIR#g" "$@"; }     # template -> stdout

# ---- setup ------------------------------------------------------------------
ensure_tools() {
    local missing=() t
    for t in haproxy nginx wrk curl h2load openssl; do command -v "$t" >/dev/null || missing+=("$t"); done
    ((${#missing[@]} == 0)) && return 0
    log "installing missing tools: ${missing[*]}"
    apt-get install -y haproxy nginx-light wrk curl nghttp2-client openssl \
        || { apt-get update && apt-get install -y haproxy nginx-light wrk curl nghttp2-client openssl; }
}

# Prints the load_module line nginx needs for `stream`, or fails if unavailable.
nginx_stream_line() {
    local mod=/usr/lib/nginx/modules/ngx_stream_module.so
    if nginx -V 2>&1 | grep -qE -- '--with-stream( |$)'; then echo ''
    elif nginx -V 2>&1 | grep -q -- '--with-stream=dynamic' && [[ -f $mod ]]; then echo "load_module $mod;"
    else return 1; fi
}

raftlb_available() {
    if [[ ! -x "$RAFTLB_BIN" && "${BENCH_NO_BUILD:-0}" != 1 && "$RAFTLB_BIN" == target/release/raftlb ]]; then
        log "building raftlb (cargo build --release -p raftlb-node)"
        cargo build --release -p raftlb-node || die "cargo build failed"
    fi
    [[ -x "$RAFTLB_BIN" ]]
}

raftlb_config() {               # raftlb_config PROTOCOL
    local access_log=''; [[ $1 == http* ]] && access_log='access_log = false'
    # https: a one-node cluster, so that `raftlb ctl cert add` can store the certificate.
    local cluster=''
    [[ $1 == https ]] && cluster=$'[cluster]\nid = "bench"\ninsecure_cleartext = true\nraft = "127.0.0.1:7099"\npeers = { 1 = "127.0.0.1:7099" }'
    cat <<EOF
[node]
id = 1
data_dir = "$BENCH_DIR/raftlb-data"

$cluster

[[listener]]
name = "web"
protocol = "$1"
bind = "127.0.0.1:${PORT[raftlb]}"
pool = "app"
$access_log

# wrk is one source opening thousands of connections a second: the
# per-source limits stay on (their cost is measured) but are never hit.
[listener.limits]
connections = 1000000
connection_rate = 10000000
request_rate = 10000000

[[pool]]
name = "app"
algorithm = "round_robin"
backends = [
  { address = "127.0.0.1:9001" },
  { address = "127.0.0.1:9002" },
]
EOF
}

start_backends() {
    local n port
    for n in 1 2; do
        port=900$n
        port_busy "$port" && die "port $port already in use"
        render "$CONF/backend.conf" | sed "s/backendN/backend$n/g; s/bN_/b${n}_/g; s/PORT/$port/" \
            >"$BENCH_DIR/backend$n.conf"
        start "backend$n" nginx -c "$BENCH_DIR/backend$n.conf"
        wait_ok "backend$n" "$port" "$LAST_PID" || die "backend$n failed"
    done
}

# start_proxy SCENARIO TARGET: 0 = serving and correct, 1 = failed, 2 = skipped (n/a)
start_proxy() {
    local sc=$1 t=$2 cfg
    port_busy "${PORT[$t]}" && { log "$t: port ${PORT[$t]} already in use"; return 1; }
    case $t in
    haproxy)
        cfg=$BENCH_DIR/haproxy-$sc.cfg; render "$CONF/haproxy-$sc.cfg" >"$cfg"
        start haproxy haproxy -f "$cfg" -db ;;
    nginx)
        cfg=$BENCH_DIR/nginx-$sc.conf
        if [[ $sc == tcp ]]; then
            local line; line=$(nginx_stream_line) || { log "nginx: no stream module, tcp n/a"; return 2; }
            render "$CONF/nginx-tcp.conf" | sed "s|^LOAD_STREAM_MODULE|$line|" >"$cfg"
        else render "$CONF/nginx-$sc.conf" >"$cfg"; fi
        start nginx nginx -c "$cfg" ;;
    raftlb)
        ((HAVE_RAFTLB)) || { log "raftlb: binary missing, skipped"; return 2; }
        cfg=$BENCH_DIR/raftlb-$sc.toml; raftlb_config "$sc" >"$cfg"
        rm -rf "$BENCH_DIR/raftlb-data"; mkdir -p "$BENCH_DIR/raftlb-data"
        start raftlb env RAFTLB_WORKER_THREADS=2 "$RAFTLB_BIN" run --config "$cfg"
        if [[ $sc == https ]]; then
            local pid=$LAST_PID deadline=$((SECONDS + 10))
            until "$RAFTLB_BIN" ctl --node 127.0.0.1:7099 --timeout 2s \
                cert add bench --cert-file "$BENCH_DIR/bench-cert.pem" --key-file "$BENCH_DIR/bench-key.pem" >/dev/null 2>&1; do
                ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null || { log "raftlb: cert add failed"; return 1; }
                sleep 0.2
            done
        fi ;;
    esac
    wait_ok "$t" "${PORT[$t]}" "$LAST_PID" "$(scheme "$sc")" || return 1
}

scheme() { [[ $1 == https ]] && echo https || echo http; }

# One certificate for every proxy: ECDSA P-256, self-signed.
make_certificate() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=bench.local -addext subjectAltName=DNS:bench.local,IP:127.0.0.1 \
        -keyout "$BENCH_DIR/bench-key.pem" -out "$BENCH_DIR/bench-cert.pem" 2>/dev/null \
        || die "openssl could not make the benchmark certificate"
    cat "$BENCH_DIR/bench-cert.pem" "$BENCH_DIR/bench-key.pem" >"$BENCH_DIR/bench-combined.pem"
}

# run_h2load SCENARIO TARGET ROUND: HTTP/2 over TLS (ALPN h2), 64 connections x 10 streams.
run_h2load() {
    local sc=$1 t=$2 r=$3 f rps
    f=$OUT/raw/$sc-$t-h2-r$r.txt
    timeout $((DURATION + 30)) h2load -c64 -m10 -t2 -D "$DURATION" "https://127.0.0.1:${PORT[$t]}/" >"$f" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || log "$t: h2load exited non-zero (see $f)"
    WRK_PID=
    rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$f"); rps=${rps:-n/a}
    add "$sc" "$t" "h2 rps" "$rps"
    add "$sc" "$t" "h2 err" "$(awk '/^requests:/ { print $10 + $12 + 0 }' "$f")"
    log "$sc r$r $t h2: ${rps} req/s"
}

# ---- measuring ----------------------------------------------------------------
to_ms() {                       # wrk latency (e.g. 512.00us, 2.31ms, 1.02s, 1.5m) -> ms
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (f < 0) print "n/a"; else printf "%.3f", n * f }'
}
add() { RES["$1|$2|$3"]+="$4 "; }

# run_wrk SCENARIO TARGET MODE ROUND; MODE = ka (keep-alive) | close
run_wrk() {
    local sc=$1 t=$2 mode=$3 r=$4 f args=(-t2 -c64 "-d${DURATION}s" --latency)
    f=$OUT/raw/$sc-$t-$mode-r$r.txt
    [[ $mode == close ]] && args+=(-H "Connection: close")
    # background + wait: a trapped INT/TERM interrupts `wait` at once (a foreground
    # wrk catches SIGINT and exits 0, which would make bash ignore the Ctrl-C)
    timeout $((DURATION + 30)) wrk "${args[@]}" "$(scheme "$sc")://127.0.0.1:${PORT[$t]}/" >"$f" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || log "$t: wrk exited non-zero (see $f)"
    WRK_PID=
    local rps p99 errs
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f"); rps=${rps:-n/a}
    p99=$(awk '$1 == "99%" { print $2 }' "$f")
    errs=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
                /Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' "$f")
    add "$sc" "$t" "$mode rps" "$rps"
    add "$sc" "$t" "$mode err" "$errs"
    [[ $mode == ka ]] && add "$sc" "$t" "ka p99" "$(to_ms "${p99:-?}")"
    log "$sc r$r $t $mode: ${rps} req/s${p99:+, p99 $p99}, errors $errs"
}

median() { tr ' ' '\n' | awk '/^[0-9.]+$/' | sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR/2] + a[NR/2 + 1]) / 2 }'; }
total() { tr ' ' '\n' | awk '/^[0-9]+$/ { s += $1; n++ } END { print n ? s : "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { if (v ~ /^[0-9.]+$/) printf("%." d "f", v); else print v }'; }

print_table() {
    local sc key label agg dec t v
    printf '%-9s %-18s %10s %10s %10s %15s %13s\n' scenario metric haproxy nginx raftlb raftlb/haproxy raftlb/nginx
    for sc in $SCENARIOS; do
        for key in "ka rps|keepalive req/s|median|0" "ka p99|keepalive p99 ms|median|2" \
                   "close rps|conn/req req/s|median|0" "ka err|keepalive errors|total|0" \
                   "close err|conn/req errors|total|0" "h2 rps|h2 req/s|median|0" "h2 err|h2 errors|total|0"; do
            [[ $key == h2* && $sc != https ]] && continue
            IFS='|' read -r key label agg dec <<<"$key"
            declare -A val=()
            for t in "${TARGETS[@]}"; do val[$t]=$($agg <<<"${RES[$sc|$t|$key]:-}"); done
            printf '%-9s %-18s' "$sc" "$label"
            for t in "${TARGETS[@]}"; do printf ' %10s' "$(fmt "${val[$t]}" "$dec")"; done
            if [[ $agg == median ]]; then
                printf ' %15s %13s\n' "$(ratio "${val[raftlb]}" "${val[haproxy]}")" "$(ratio "${val[raftlb]}" "${val[nginx]}")"
            else printf ' %15s %13s\n' - -; fi
            unset val
        done
    done
}

# ---- main -------------------------------------------------------------------
ensure_tools
OUT=bench/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/raw"
BENCH_DIR=$(mktemp -d /tmp/raftlb-bench.XXXXXX)
mkdir -p "$BENCH_DIR"/{run,logs,tmp,raftlb-data}
HAVE_RAFTLB=0; raftlb_available && HAVE_RAFTLB=1 || log "raftlb: binary missing, skipped ($RAFTLB_BIN)"
{ echo "date: $(date -Is)  host: $(uname -n)  cpus: $(nproc)  git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "DURATION=$DURATION RUNS=$RUNS SCENARIOS=\"$SCENARIOS\" wrk -t2 -c64"
  echo "$(haproxy -v | head -1); $(nginx -v 2>&1); raftlb: $RAFTLB_BIN (available=$HAVE_RAFTLB)"; } >"$OUT/meta.txt"

[[ " $SCENARIOS " == *" https "* ]] && make_certificate
start_backends
BACKEND_PIDS=("${PIDS[@]}")
for sc in $SCENARIOS; do
    [[ -f $CONF/haproxy-$sc.cfg ]] || die "unknown scenario: $sc"
    log "scenario $sc: starting proxies"
    live=()
    for t in "${TARGETS[@]}"; do
        rc=0; start_proxy "$sc" "$t" || rc=$?
        case $rc in
        0) live+=("$t") ;;
        1) log "$t ($sc): FAILED correctness check"; FAILED=1 ;;
        esac
    done
    for ((r = 1; r <= RUNS; r++)); do
        # Each round starts with the next proxy, so none always runs first
        # (or right after another's load) on the shared cores.
        shift_by=$(((r - 1) % ${#live[@]}))
        order=("${live[@]:shift_by}" "${live[@]:0:shift_by}")
        for mode in ka close; do
            for t in "${order[@]}"; do run_wrk "$sc" "$t" "$mode" "$r"; done
        done
        if [[ $sc == https ]]; then
            for t in "${order[@]}"; do run_h2load "$sc" "$t" "$r"; done
        fi
    done
    # stop this scenario's proxies, keep the backends
    for p in "${PIDS[@]:${#BACKEND_PIDS[@]}}"; do stop_pid "$p"; done
    PIDS=("${BACKEND_PIDS[@]}")
done

print_table | tee "$OUT/table.txt"
log "results: $OUT"
((FAILED == 0)) || { log "some proxy failed its correctness check"; exit 1; }
