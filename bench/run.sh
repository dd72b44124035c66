#!/usr/bin/env bash
# raftlb benchmark harness: raftlb vs HAProxy vs nginx on loopback, in one run.
#
# Starts two nginx backends (127.0.0.1:9001, :9002) answering "ok", then for each
# scenario (http, tcp, https) starts HAProxy (:8080, 2 threads), nginx (:8081, 2
# workers; tcp through its `stream` module) and raftlb (:8082, 2 worker threads),
# checks each answers "ok", and runs wrk against them interleaved, the order
# rotated each round (round 1: haproxy, nginx, raftlb; round 2: nginx, raftlb,
# haproxy; ...):
#   keep-alive req/s + p99 latency, and connection-per-request req/s (for https:
#   a full TLS handshake per request), and for https h2load's HTTP/2 req/s;
#   for http and tcp also the proxy's CPU time per request at a fixed offered
#   load below saturation (h2load --h1 --rps, CPU_RPS req/s in all).
# https uses one ECDSA P-256 certificate for all three, TLS 1.3 (raftlb gets it
# with `raftlb ctl cert add` on a one-node cluster, as an operator would).
# The footprint scenario measures memory: the idle RSS of each node of a 3-node
# raftlb cluster, and each proxy's RSS growth per idle keep-alive client
# connection (FOOT_CONNS connections held by bench/idle_conns.py). The stability
# scenario puts wrk's full load on a 3-node cluster for STABILITY_SECS and counts
# the leader changes and term rises it caused (there should be none).
# Prints medians and raftlb/haproxy, raftlb/nginx ratios, then every goal of
# issue 21 with its figures and a verdict; raw output, the table and the goals
# go to bench/results/<timestamp>/. Nothing is pinned: all shares the cores.
#
# Env: DURATION=10 RUNS=3 SCENARIOS="http tcp https footprint" (or stability)
#      SMOKE=1 (=DURATION=2 RUNS=1 FOOT_CONNS=1000 IDLE_SECS=2 STABILITY_SECS=2, and
#      stability among the default scenarios)
#      CPU_RPS=20000 CPU_CLIENTS=100 FOOT_CONNS=10000 IDLE_SECS=5 STABILITY_SECS=600
#      RAFTLB_BIN=target/release/raftlb  BENCH_NO_BUILD=1 (never cargo build)
# Exit status: non-zero when a proxy fails its correctness check (never on ratios
# or goal verdicts).
set -euo pipefail

cd "$(dirname "$0")/.."                      # repo root
CONF=bench/conf
if [[ "${SMOKE:-0}" == 1 ]]; then
    DURATION=2 RUNS=1 FOOT_CONNS=1000 IDLE_SECS=2 STABILITY_SECS=2
    SCENARIOS=${SCENARIOS:-http tcp https footprint stability}
fi
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-http tcp https footprint}
RAFTLB_BIN=${RAFTLB_BIN:-target/release/raftlb}
CPU_RPS=${CPU_RPS:-20000}         # fixed offered load for the CPU-per-request metric
CPU_CLIENTS=${CPU_CLIENTS:-100}   # ... spread over this many keep-alive connections
FOOT_CONNS=${FOOT_CONNS:-10000}   # idle keep-alive connections held in footprint
IDLE_SECS=${IDLE_SECS:-5}         # footprint: seconds a ready cluster is left idle
STABILITY_SECS=${STABILITY_SECS:-600}  # stability: seconds of full load on a 3-node cluster
TARGETS=(haproxy nginx raftlb)
declare -A PORT=([haproxy]=8080 [nginx]=8081 [raftlb]=8082)
declare -A PROXY_PID=()    # target -> pid of the proxy (nginx: its master)
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

# wait_ok NAME PORT PID [SCHEME [HOST]]: poll until the port serves "ok" (10 s
# deadline); also requests a second time so both round-robin backends are exercised.
wait_ok() {
    local name=$1 port=$2 pid=$3 deadline=$((SECONDS + 10)) body scheme=${4:-http} host=${5:-127.0.0.1}
    until curl -kfsS --max-time 1 "$scheme://$host:$port/" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
            log "$name: not serving on :$port"; tail -n 20 "$BENCH_DIR/logs/$name".* >&2 || true
            return 1
        fi
        sleep 0.1
    done
    for _ in 1 2; do
        body=$(curl -kfsS --max-time 2 "$scheme://$host:$port/" 2>&1) || body="curl failed: $body"
        [[ "$body" == ok ]] || { log "$name: expected \"ok\", got \"$body\""; return 1; }
    done
}

render() { sed "s#BENCH_DIR#$BENCH_DIR#g" "$@"; }     # template -> stdout

# ---- setup ------------------------------------------------------------------
apt_install() {                # to stderr: stdout is the table
    { apt-get install -y "$@" || { apt-get update && apt-get install -y "$@"; }; } >&2
}

ensure_tools() {
    local missing=() t
    for t in haproxy nginx wrk curl h2load openssl python3; do command -v "$t" >/dev/null || missing+=("$t"); done
    if ((${#missing[@]} > 0)); then
        log "installing missing tools: ${missing[*]}"
        apt_install haproxy nginx-light wrk curl nghttp2-client openssl python3
    fi
    # nginx-light has no `stream` (TCP proxy); Debian ships it as a dynamic module.
    # Without it nginx's tcp column is n/a, which is no reason to stop the run.
    if [[ " $SCENARIOS " == *" tcp "* ]] && ! nginx_stream_line >/dev/null; then
        log "installing nginx's stream module (libnginx-mod-stream)"
        apt_install libnginx-mod-stream || log "libnginx-mod-stream not installed: nginx tcp will be n/a"
    fi
}

# Prints the load_module line nginx needs for `stream` ('' if built in), or fails
# if unavailable. Debian's libnginx-mod-stream puts the module in nginx's
# --modules-path (/usr/lib/nginx/modules/ngx_stream_module.so) and enables it with
# /etc/nginx/modules-enabled/50-mod-stream.conf ("load_module modules/...so;",
# relative to --prefix); our configs don't include /etc/nginx, so load it ourselves.
nginx_stream_line() {
    local v prefix modpath f p cands=()
    v=$(nginx -V 2>&1)
    if grep -qE -- '--with-stream( |$)' <<<"$v"; then echo ''; return 0; fi
    grep -q -- '--with-stream=dynamic' <<<"$v" || return 1
    prefix=$(sed -n 's/.*--prefix=\([^ ]*\).*/\1/p' <<<"$v"); prefix=${prefix:-/usr/share/nginx}
    modpath=$(sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p' <<<"$v")
    for f in /etc/nginx/modules-enabled/*.conf; do
        [[ -f $f ]] || continue
        p=$(sed -n 's/^[[:space:]]*load_module[[:space:]]\{1,\}\([^;]*ngx_stream_module\.so\).*/\1/p' "$f" | head -n 1)
        [[ -z $p ]] && continue
        [[ $p == /* ]] || p=$prefix/$p
        cands+=("$p")
    done
    [[ -n $modpath ]] && cands+=("$modpath/ngx_stream_module.so")
    cands+=(/usr/lib/nginx/modules/ngx_stream_module.so)
    for p in "${cands[@]}"; do
        [[ -f $p ]] && { echo "load_module $(readlink -f "$p");"; return 0; }
    done
    return 1
}

raftlb_available() {
    if [[ ! -x "$RAFTLB_BIN" && "${BENCH_NO_BUILD:-0}" != 1 && "$RAFTLB_BIN" == target/release/raftlb ]]; then
        log "building raftlb (cargo build --release -p raftlb-node)"
        cargo build --release -p raftlb-node || die "cargo build failed"
    fi
    [[ -x "$RAFTLB_BIN" ]]
}

# raftlb_config PROTOCOL [ID NODE_LINES CLUSTER_LINES LISTENER_LINES BIND]: a node's
# TOML. Defaults: node 1, data in $BENCH_DIR/raftlb-data, no cluster (https: a
# one-node cluster), listening on 127.0.0.1:8082. Access log off for http(s),
# as in HAProxy's and nginx's configs (raftlb logs no tcp connection by default).
raftlb_config() {
    local access_log=''; [[ $1 == http* ]] && access_log='access_log = false'
    local id=${2:-1} node_lines=${3:-"data_dir = \"$BENCH_DIR/raftlb-data\""} cluster=${4:-}
    local listener_lines=${5:-} bind=${6:-127.0.0.1:${PORT[raftlb]}}
    # https: a one-node cluster, so that `raftlb ctl cert add` can store the certificate.
    [[ $1 == https && -z $cluster ]] && cluster=$'[cluster]\nid = "bench"\ninsecure_cleartext = true\nraft = "127.0.0.1:7099"\npeers = { 1 = "127.0.0.1:7099" }'
    cat <<EOF
[node]
id = $id
$node_lines

$cluster

[[listener]]
name = "web"
protocol = "$1"
bind = "$bind"
pool = "app"
$access_log
$listener_lines

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

# Footprint uses the http configs with every proxy's connection limit raised to
# FOOT_LIMIT (HAProxy maxconn, nginx worker_connections, raftlb max_connections),
# so that FOOT_CONNS idle clients fit in each. HAProxy wants 2 descriptors per
# maxconn and by default refuses to start when `ulimit -n` is lower (strict-limits):
# `no strict-limits` lets it start and hold what the descriptors allow.
raise_limits() {
    sed "s/maxconn 8000/maxconn $FOOT_LIMIT/; s/worker_connections 8192/worker_connections $FOOT_LIMIT/
         s/^global\$/global\n    no strict-limits/"
}

# start_proxy SCENARIO TARGET: 0 = serving and correct, 1 = failed, 2 = skipped (n/a)
start_proxy() {
    local sc=$1 t=$2 cfg proto=$1 limits=cat raftlb_extra=''
    if [[ $sc == footprint ]]; then proto=http limits=raise_limits raftlb_extra="max_connections = $FOOT_LIMIT"; fi
    port_busy "${PORT[$t]}" && { log "$t: port ${PORT[$t]} already in use"; return 1; }
    case $t in
    haproxy)
        cfg=$BENCH_DIR/haproxy-$sc.cfg; render "$CONF/haproxy-$proto.cfg" | $limits >"$cfg"
        start haproxy haproxy -f "$cfg" -db ;;
    nginx)
        cfg=$BENCH_DIR/nginx-$sc.conf
        if [[ $sc == tcp ]]; then
            local line; line=$(nginx_stream_line) || { log "nginx: no stream module, tcp n/a"; return 2; }
            render "$CONF/nginx-tcp.conf" | sed "s|^LOAD_STREAM_MODULE|$line|" >"$cfg"
        else render "$CONF/nginx-$proto.conf" | $limits >"$cfg"; fi
        start nginx nginx -c "$cfg" ;;
    raftlb)
        ((HAVE_RAFTLB)) || { log "raftlb: binary missing, skipped"; return 2; }
        cfg=$BENCH_DIR/raftlb-$sc.toml; raftlb_config "$proto" 1 "" "" "$raftlb_extra" >"$cfg"
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
    PROXY_PID[$t]=$LAST_PID
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
    local proxy0 busy0
    proxy0=$(cpu_ticks "${PROXY_PID[$t]}") busy0=$(machine_ticks)
    timeout $((DURATION + 30)) wrk "${args[@]}" "$(scheme "$sc")://127.0.0.1:${PORT[$t]}/" >"$f" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || log "$t: wrk exited non-zero (see $f)"
    WRK_PID=
    local rps p99 errs
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f"); rps=${rps:-n/a}
    if [[ $mode == ka ]]; then
        # Where the machine's CPU went at saturation, per request answered.
        local answered
        answered=$(awk '/requests in/ { print $1 }' "$f")
        add "$sc" "$t" "sat proxy us" "$(per_request "$(($(cpu_ticks "${PROXY_PID[$t]}") - proxy0))" "$answered")"
        add "$sc" "$t" "sat machine us" "$(per_request "$(($(machine_ticks) - busy0))" "$answered")"
    fi
    p99=$(awk '$1 == "99%" { print $2 }' "$f")
    errs=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
                /Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' "$f")
    add "$sc" "$t" "$mode rps" "$rps"
    add "$sc" "$t" "$mode err" "$errs"
    [[ $mode == ka ]] && add "$sc" "$t" "ka p99" "$(to_ms "${p99:-?}")"
    log "$sc r$r $t $mode: ${rps} req/s${p99:+, p99 $p99}, errors $errs"
}

# ---- process accounting ---------------------------------------------------------
# A process and all its descendants (nginx: the master and its workers).
tree_pids() {
    local p
    echo "$1"
    for p in $(pgrep -P "$1" || true); do tree_pids "$p"; done
}
# User + system CPU time, in clock ticks, of a process tree: fields 14 and 15 of
# /proc/PID/stat (counted after the ")" closing the command name, which may hold
# spaces). A process's own figures include all its threads, living or gone.
cpu_ticks() {
    local p s=0 v
    for p in $(tree_pids "$1"); do
        v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || v=0
        s=$((s + ${v:-0}))
    done
    echo "$s"
}
# Resident memory (VmRSS, kB) of a process tree.
rss_kb() {
    local p s=0 v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || v=0
        s=$((s + ${v:-0}))
    done
    echo "$s"
}
CLK_TCK=$(getconf CLK_TCK)
# Busy CPU time of the whole machine, in clock ticks: user, nice, system, irq
# and softirq of /proc/stat's "cpu" line (idle, iowait and steal left out).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# per_request TICKS REQUESTS: µs per request, or n/a.
per_request() {
    awk -v c="$1" -v d="${2:-0}" -v hz="$CLK_TCK" 'BEGIN {
        if (d + 0 > 0) printf "%.2f", c * 1e6 / hz / d; else print "n/a" }'
}

# run_cpu SCENARIO TARGET ROUND: CPU time the proxy spends per request at a fixed
# offered load below saturation: h2load --h1 (keep-alive HTTP/1.1, also through the
# tcp proxies), CPU_CLIENTS connections each sending CPU_RPS/CPU_CLIENTS req/s for
# DURATION s. (user+sys ticks after - before) / requests answered, in µs; the
# achieved req/s is kept too, to show the load was the one asked for.
run_cpu() {
    local sc=$1 t=$2 r=$3 f before after answered rps us
    f=$OUT/raw/$sc-$t-cpu-r$r.txt
    before=$(cpu_ticks "${PROXY_PID[$t]}")
    timeout $((DURATION + 30)) h2load --h1 -t2 -c "$CPU_CLIENTS" --rps $((CPU_RPS / CPU_CLIENTS)) \
        -D "$DURATION" "http://127.0.0.1:${PORT[$t]}/" >"$f" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || log "$t: h2load exited non-zero (see $f)"
    WRK_PID=
    after=$(cpu_ticks "${PROXY_PID[$t]}")
    answered=$(awk '/^requests:/ { print $8 }' "$f")
    rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$f"); rps=${rps:-n/a}
    us=$(awk -v d="${answered:-0}" -v c=$((after - before)) -v hz="$CLK_TCK" \
        'BEGIN { if (d > 0) printf "%.2f", c / hz * 1e6 / d; else print "n/a" }')
    echo "cpu ticks: $before -> $after (CLK_TCK $CLK_TCK), requests $answered, µs/req $us" >>"$f"
    add "$sc" "$t" "cpu us" "$us"
    add "$sc" "$t" "cpu rps" "$rps"
    add "$sc" "$t" "cpu err" "$(awk '/^requests:/ { print $10 + $12 + 0 }' "$f")"
    awk -v a="$rps" -v w="$CPU_RPS" 'BEGIN { exit !(a ~ /^[0-9.]+$/ && a < 0.95 * w) }' \
        && log "$sc $t: only $rps of $CPU_RPS req/s offered: saturated, the CPU figure is not at the fixed load"
    log "$sc r$r $t cpu: ${us} µs/req at ${rps} req/s"
}

# ---- footprint ------------------------------------------------------------------
# start_cluster: a 3-node raftlb cluster on loopback (node N on 127.0.0.N: Raft
# and admin on :7100 in cleartext, metrics on :9100, the http listener on :8082
# through bind_ip, default Raft timings), every node ready (/readyz 200) and
# serving "ok"; their pids in CLUSTER_PIDS.
# cluster_idle_rss: that cluster left IDLE_SECS without traffic; records each
# node's VmRSS (MiB).
CLUSTER_PIDS=()
start_cluster() {
    local n cfg deadline code peers='' pids=()
    for n in 1 2 3; do peers+="${peers:+, }$n = \"127.0.0.$n:7100\""; done
    for n in 1 2 3; do
        mkdir -p "$BENCH_DIR/cluster/node$n"
        cfg=$BENCH_DIR/cluster/node$n.toml
        raftlb_config http "$n" \
            "data_dir = \"$BENCH_DIR/cluster/node$n\""$'\n'"bind_ip = \"127.0.0.$n\""$'\n'"metrics = \"127.0.0.$n:9100\"" \
            "[cluster]"$'\n'"id = \"bench-footprint\""$'\n'"insecure_cleartext = true"$'\n'"raft = \"127.0.0.$n:7100\""$'\n'"peers = { $peers }" \
            "" "0.0.0.0:${PORT[raftlb]}" >"$cfg"
        start "raftlb-node$n" env RAFTLB_WORKER_THREADS=2 "$RAFTLB_BIN" run --config "$cfg"
        pids+=("$LAST_PID")
    done
    deadline=$((SECONDS + 30))
    for n in 1 2 3; do
        until code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.$n:9100/readyz") \
            && [[ $code == 200 ]]; do
            if ! kill -0 "${pids[n - 1]}" 2>/dev/null || ((SECONDS >= deadline)); then
                log "raftlb node $n: not ready within 30 s (/readyz: ${code:-no answer})"
                tail -n 20 "$BENCH_DIR/logs/raftlb-node$n.out" >&2 || true
                return 1
            fi
            sleep 0.2
        done
        wait_ok "raftlb-node$n" "${PORT[raftlb]}" "${pids[n - 1]}" http "127.0.0.$n" || return 1
    done
    CLUSTER_PIDS=("${pids[@]}")
}

cluster_idle_rss() {
    local n rss pids
    start_cluster || return 1
    pids=("${CLUSTER_PIDS[@]}")
    log "footprint: 3-node cluster ready, idle for ${IDLE_SECS} s"
    sleep "$IDLE_SECS"           # the measured condition itself: no traffic for this long
    for n in 1 2 3; do
        kill -0 "${pids[n - 1]}" 2>/dev/null || { log "raftlb node $n: exited while idle"; return 1; }
        rss=$(awk -v k="$(rss_kb "${pids[n - 1]}")" 'BEGIN { printf "%.1f", k / 1024 }')
        add footprint raftlb "node$n rss" "$rss"
        add footprint raftlb "idle rss" "$rss"
        echo "node $n: VmRSS $rss MiB" >>"$OUT/raw/footprint-cluster.txt"
    done
    add footprint raftlb "idle rss max" "$(tr ' ' '\n' <<<"${RES[footprint|raftlb|idle rss]}" | sort -g | tail -n 1)"
    log "footprint: idle RSS (MiB) ${RES[footprint|raftlb|idle rss]}"
}

# idle_conn_rss TARGET: the proxy's RSS growth per idle keep-alive client
# connection. bench/idle_conns.py opens FOOT_CONNS connections, one request each,
# and holds them; RSS of the proxy's processes before and while they are held;
# (after - before) / connections still open then, in bytes.
idle_conn_rss() {
    local t=$1 pid=${PROXY_PID[$1]} f=$OUT/raw/footprint-$1-idle-conns.txt
    local limit=$((30 + FOOT_CONNS / 200)) before after='' ready='' reply='' rfd wfd open per
    before=$(rss_kb "$pid")
    coproc IDLE { exec timeout $((limit + 5)) python3 bench/idle_conns.py 127.0.0.1 "${PORT[$t]}" "$FOOT_CONNS" "$limit"; }
    WRK_PID=$IDLE_PID rfd=${IDLE[0]:-} wfd=${IDLE[1]:-}
    if [[ -n $rfd && -n $wfd ]]; then   # (bash drops them once the helper has exited)
        exec {wfd}>&"$wfd"     # a plain copy: coproc descriptors don't reach subshells
        if read -r -t "$limit" -u "$rfd" ready && [[ $ready == ready* ]]; then
            after=$(rss_kb "$pid")
            # in a subshell: a write to a helper already gone must not SIGPIPE this shell
            (echo check >&"$wfd") 2>/dev/null || true
            read -r -t 10 -u "$rfd" reply || reply=''
        fi
        exec {wfd}>&-
    fi
    wait "$WRK_PID" || true
    WRK_PID=
    open=$(awk '$1 == "open" { print $2 }' <<<"$reply")
    per=$(awk -v b="$before" -v a="$after" -v n="${open:-0}" \
        'BEGIN { if (a ~ /^[0-9]+$/ && n > 0) printf "%.0f", (a - b) * 1024 / n; else print "n/a" }')
    printf '%s\nRSS before %s kB, with the connections %s kB; %s; %s B/connection\n' \
        "${ready:-no ready line}" "$before" "${after:-n/a}" "${reply:-no reply to check}" "$per" >"$f"
    ((${open:-0} >= FOOT_CONNS * 9 / 10)) \
        || log "$t: only ${open:-0} of $FOOT_CONNS idle connections held (see $f)"
    add footprint "$t" "conn rss" "$per"
    add footprint "$t" "conns held" "${open:-0}"
    log "footprint $t: ${ready:-?}, ${reply:-?}; RSS $before -> ${after:-?} kB = $per B/connection"
}

median() { tr ' ' '\n' | awk '/^[0-9.]+$/' | sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR/2] + a[NR/2 + 1]) / 2 }'; }
total() { tr ' ' '\n' | awk '/^[0-9]+$/ { s += $1; n++ } END { print n ? s : "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# pad TEXT WIDTH: TEXT left-aligned in WIDTH characters. printf pads by bytes,
# and "µ", "×", "≥" take two; continuation bytes (0x80-0xbf) are not counted.
pad() {
    local LC_ALL=C
    local s=$1 c
    c=${s//[^$'\x80'-$'\xbf']/}
    printf '%s%*s' "$s" $(($2 - ${#s} + ${#c})) ''
}
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { if (v ~ /^[0-9.]+$/) printf("%." d "f", v); else print v }'; }

# metrics_of SCENARIO: the table's rows, "key|label|aggregate|decimals" each.
metrics_of() {
    case $1 in
    footprint)
        printf '%s\n' "idle rss|idle RSS MiB (3 nodes)|median|1" "idle rss max|idle RSS MiB, largest|median|1" \
            "conn rss|RSS B/idle conn|median|0" "conns held|idle conns held|total|0" ;;
    stability)
        printf '%s\n' "elections|leader changes under load|total|0" "term rises|term rises under load|total|0" \
            "load rps|req/s during it|median|0" ;;
    *)
        printf '%s\n' "ka rps|keepalive req/s|median|0" "ka p99|keepalive p99 ms|median|2" \
            "close rps|conn/req req/s|median|0"
        [[ $1 == https ]] && printf '%s\n' "h2 rps|h2 req/s|median|0"
        [[ $1 == http || $1 == tcp ]] && printf '%s\n' "cpu us|cpu µs/req @$((CPU_RPS / 1000))k|median|2" \
            "cpu rps|  (load req/s)|median|0"
        printf '%s\n' "sat proxy us|keepalive: proxy µs/req|median|2" "sat machine us|  machine µs/req|median|2"
        printf '%s\n' "ka err|keepalive errors|total|0" "close err|conn/req errors|total|0"
        [[ $1 == https ]] && printf '%s\n' "h2 err|h2 errors|total|0"
        [[ $1 == http || $1 == tcp ]] && printf '%s\n' "cpu err|cpu-run errors|total|0"
        return 0 ;;
    esac
}

print_table() {
    local sc key label agg dec t
    printf '%-9s %-24s %10s %10s %10s %15s %13s\n' scenario metric haproxy nginx raftlb raftlb/haproxy raftlb/nginx
    for sc in $SCENARIOS; do
        while IFS='|' read -r key label agg dec; do
            declare -A val=()
            for t in "${TARGETS[@]}"; do val[$t]=$($agg <<<"${RES[$sc|$t|$key]:-}"); done
            printf '%-9s %s' "$sc" "$(pad "$label" 24)"
            for t in "${TARGETS[@]}"; do printf ' %10s' "$(fmt "${val[$t]}" "$dec")"; done
            if [[ $agg == median ]]; then
                printf ' %15s %13s\n' "$(ratio "${val[raftlb]}" "${val[haproxy]}")" "$(ratio "${val[raftlb]}" "${val[nginx]}")"
            else printf ' %15s %13s\n' - -; fi
            unset val
        done < <(metrics_of "$sc")
    done
}

# ---- goals (issue 21) -------------------------------------------------------------
med() { median <<<"${RES[$1|$2|$3]:-}"; }            # med SCENARIO TARGET METRIC
# check A OP B: 1 if the comparison holds, 0 if not, n/a if a figure is missing
check() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN {
    if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/) { print "n/a"; exit }
    print ((op == ">=") ? (a + 0 >= b + 0) : (a + 0 <= b + 0)) }'; }
# verdict CHECK...: MET when all hold, NOT MET when one fails, n/a if one is missing
verdict() {
    local c v=MET
    for c in "$@"; do
        if [[ $c == n/a ]]; then echo n/a; return; fi
        [[ $c == 1 ]] || v="NOT MET"
    done
    echo "$v"
}
x() { [[ $1 == n/a ]] && echo n/a || echo "$1×"; }   # a ratio for display
goal() {                        # goal ID WHAT FIGURES TARGET VERDICT: one line
    printf '%-3s %s %s %s %s\n' "$1" "$(pad "$2" 30)" "$(pad "$3" 48)" "$(pad "$4" 30)" "$5"
}

# rate_goal ID WHAT SCENARIO METRIC MIN_VS_HAPROXY MIN_VS_NGINX: raftlb's median
# over each's; a minimum of "-" prints that ratio for information only.
rate_goal() {
    local id=$1 what=$2 sc=$3 key=$4 min_h=$5 min_n=$6 rh rn target checks=()
    rh=$(ratio "$(med "$sc" raftlb "$key")" "$(med "$sc" haproxy "$key")")
    rn=$(ratio "$(med "$sc" raftlb "$key")" "$(med "$sc" nginx "$key")")
    if [[ $min_h == "$min_n" ]]; then target="≥ ${min_h}× both"
    elif [[ $min_n == - ]]; then target="≥ ${min_h}× haproxy"
    else target="≥ ${min_n}× nginx, ≥ ${min_h}× haproxy"; fi
    [[ $min_h != - ]] && checks+=("$(check "$rh" '>=' "$min_h")")
    [[ $min_n != - ]] && checks+=("$(check "$rn" '>=' "$min_n")")
    if [[ $min_n == - ]]; then
        goal "$id" "$what" "$(x "$rh") haproxy (nginx $(x "$rn"), info)" "$target" "$(verdict "${checks[@]}")"
    else
        goal "$id" "$what" "$(x "$rh") haproxy, $(x "$rn") nginx" "$target" "$(verdict "${checks[@]}")"
    fi
}

# low_goal ID WHAT SCENARIO METRIC UNIT DECIMALS [NOTE]: raftlb's median ≤ both others'.
low_goal() {
    local id=$1 what=$2 sc=$3 key=$4 unit=$5 dec=$6 note=${7:-} r h n
    r=$(med "$sc" raftlb "$key") h=$(med "$sc" haproxy "$key") n=$(med "$sc" nginx "$key")
    goal "$id" "$what" "$(fmt "$r" "$dec") vs haproxy $(fmt "$h" "$dec"), nginx $(fmt "$n" "$dec") $unit" \
        "≤ both" "$(verdict "$(check "$r" '<=' "$h")" "$(check "$r" '<=' "$n")")$note"
}

# cpu_goal ID SCENARIO: goal 5 for one scenario; the verdict is flagged when some
# proxy did not get 95 % of the fixed load (its figure is from a saturated run).
cpu_goal() {
    local t note=''
    for t in "${TARGETS[@]}"; do
        [[ $(check "$(med "$2" "$t" "cpu rps")" '>=' $((CPU_RPS * 95 / 100))) == 0 ]] \
            && note=" (load under $((CPU_RPS * 95 / 100)) req/s: saturated)"
    done
    low_goal "$1" "$2 cpu µs/req @$((CPU_RPS / 1000))k" "$2" "cpu us" µs 2 "$note"
}

# budget_line SCENARIO PEER: what 1.15× PEER's keep-alive req/s would leave
# the proxy. Saturated, the machine's busy µs per request (M) is spent by the
# proxy (P) and the rest (wrk, the backends, the kernel's share of each); at
# 1.15× the rate the machine has M / 1.15 per request, and if the rest costs
# what it did beside PEER, the proxy may take M / 1.15 - (M - P).
budget_line() {
    local m p r budget
    m=$(med "$1" "$2" "sat machine us") p=$(med "$1" "$2" "sat proxy us") r=$(med "$1" raftlb "sat proxy us")
    budget=$(awk -v m="$m" -v p="$p" 'BEGIN { if (m !~ /^[0-9.]+$/ || p !~ /^[0-9.]+$/) print "n/a"
        else printf "%.2f", m / 1.15 - (m - p) }')
    goal "" "  (budget at 1.15× $2)" "proxy ≤ $budget µs/req; $2 $(fmt "$p" 2), raftlb $(fmt "$r" 2)" \
        "of machine $(fmt "$m" 2) µs/req" info
}

print_goals() {
    local nodes largest per
    echo
    echo "goals (issue 21): raftlb's medians from this run against the others'; verdicts never fail the run"
    rate_goal 1a "http keep-alive req/s" http "ka rps" 1.15 1.15
    budget_line http nginx
    low_goal 1b "http keep-alive p99" http "ka p99" ms 2
    rate_goal 2 "http conn/req req/s" http "close rps" 1.3 1.15
    rate_goal 3a "tcp keep-alive req/s" tcp "ka rps" 1.15 -
    budget_line tcp haproxy
    rate_goal 3b "tcp conn/req req/s" tcp "close rps" 1.15 -
    rate_goal 4a "https keep-alive req/s" https "ka rps" 1.15 1.15
    rate_goal 4b "https handshakes/s (conn/req)" https "close rps" 1.15 1.15
    rate_goal 4c "https h2 req/s" https "h2 rps" 1.15 1.15
    cpu_goal 5a http
    cpu_goal 5b tcp
    nodes=$(for n in 1 2 3; do echo "$(fmt "$(med footprint raftlb "node$n rss")" 1)"; done | paste -sd/)
    [[ $nodes == n/a/n/a/n/a ]] && nodes=n/a
    largest=$(med footprint raftlb "idle rss max")
    goal 6a "idle node RSS, 3-node cluster" "$nodes MiB (median $(fmt "$(med footprint raftlb "idle rss")" 1))" \
        "≤ 30 MiB on every node" "$(verdict "$(check "$largest" '<=' 30)")"
    per=$(med footprint raftlb "conn rss")
    goal 6b "RSS per idle keep-alive conn" \
        "$(fmt "$per" 0) B (haproxy $(fmt "$(med footprint haproxy "conn rss")" 0), nginx $(fmt "$(med footprint nginx "conn rss")" 0); $FOOT_CONNS conns)" \
        "≤ 8192 B (8 KiB)" "$(verdict "$(check "$per" '<=' 8192)")"
    goal 8 "no election under full load" \
        "$(med stability raftlb elections) leader changes, $(med stability raftlb "term rises") term rises in ${STABILITY_SECS} s" \
        "0 (default timings, 3 nodes)" "$(verdict "$(check "$(med stability raftlb elections)" '<=' 0)" \
        "$(check "$(med stability raftlb "term rises")" '<=' 0)")"
}

# ---- stability ------------------------------------------------------------------
# raft_metric NODE NAME: one Raft metric of cluster node NODE (127.0.0.NODE:9100).
raft_metric() {
    curl -s --max-time 2 "http://127.0.0.$1:9100/metrics" | awk -v m="raftlb_$2" '$1 == m { print $2 }'
}

# cluster_under_load: the 3-node cluster on the default timings, wrk's full load
# (-t2 -c64, keep-alive) on node 1 for STABILITY_SECS; records how often each
# node saw the leader change and how far the term rose meanwhile (goal 8: no
# spurious election, so no VIP move, under load).
cluster_under_load() {
    local n f=$OUT/raw/stability-wrk.txt before=() terms=() changes=0 rises=0 rps after term
    start_cluster || return 1
    for n in 1 2 3; do
        before[n]=$(raft_metric "$n" raft_leader_changes_total); terms[n]=$(raft_metric "$n" raft_term)
    done
    log "stability: 3-node cluster ready; full load on node 1 for ${STABILITY_SECS} s"
    timeout $((STABILITY_SECS + 30)) wrk -t2 -c64 "-d${STABILITY_SECS}s" "http://127.0.0.1:${PORT[raftlb]}/" >"$f" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || log "stability: wrk exited non-zero (see $f)"
    WRK_PID=
    for n in 1 2 3; do
        kill -0 "${CLUSTER_PIDS[n - 1]}" 2>/dev/null || { log "raftlb node $n: exited under load"; return 1; }
        after=$(raft_metric "$n" raft_leader_changes_total); term=$(raft_metric "$n" raft_term)
        [[ ${before[n]} =~ ^[0-9]+$ && $after =~ ^[0-9]+$ && $term =~ ^[0-9]+$ ]] \
            || { log "stability: node $n's Raft metrics unreadable"; return 1; }
        changes=$((changes + after - before[n])); rises=$((rises + term - terms[n]))
        echo "node $n: leader changes ${before[n]} -> $after, term ${terms[n]} -> $term" >>"$OUT/raw/stability.txt"
    done
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
    add stability raftlb "elections" "$changes"
    add stability raftlb "term rises" "$rises"
    add stability raftlb "load rps" "${rps:-n/a}"
    log "stability: ${rps:-?} req/s; leader changes seen $changes, term rises $rises"
}

# Stop the current scenario's processes; the backends stay.
stop_scenario() {
    local p
    for p in "${PIDS[@]:${#BACKEND_PIDS[@]}}"; do stop_pid "$p"; done
    PIDS=("${BACKEND_PIDS[@]}")
    PROXY_PID=()
}

# footprint: the idle 3-node cluster, then each proxy alone holding idle clients.
run_footprint() {
    local t rc
    if ((HAVE_RAFTLB)); then
        cluster_idle_rss || { log "raftlb (footprint): 3-node cluster FAILED"; FAILED=1; }
        stop_scenario
    fi
    for t in "${TARGETS[@]}"; do
        rc=0; start_proxy footprint "$t" || rc=$?
        case $rc in
        0) idle_conn_rss "$t" ;;
        1) log "$t (footprint): FAILED correctness check"; FAILED=1 ;;
        esac
        stop_scenario
    done
}

# ---- main -------------------------------------------------------------------
for sc in $SCENARIOS; do
    [[ $sc == footprint || $sc == stability || -f $CONF/haproxy-$sc.cfg ]] || die "unknown scenario: $sc"
done
ensure_tools
# footprint holds FOOT_CONNS sockets in one process: take every descriptor allowed.
# raftlb's data plane holds at most (open-file limit - 256) / 2 connections (its
# README, "Descriptors"), so FOOT_CONNS stays under that, for every proxy alike.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ " $SCENARIOS " == *" footprint "* && $(ulimit -n) =~ ^[0-9]+$ ]] \
    && ((FOOT_CONNS > ($(ulimit -n) - 256) / 2 - 128)); then
    log "footprint: FOOT_CONNS $FOOT_CONNS lowered to $((($(ulimit -n) - 256) / 2 - 128)) (ulimit -n $(ulimit -n))"
    FOOT_CONNS=$((($(ulimit -n) - 256) / 2 - 128))
fi
FOOT_LIMIT=$((FOOT_CONNS + 2000))   # footprint: every proxy's connection limit
OUT=bench/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/raw"
BENCH_DIR=$(mktemp -d /tmp/raftlb-bench.XXXXXX)
mkdir -p "$BENCH_DIR"/{run,logs,tmp,raftlb-data}
HAVE_RAFTLB=0; raftlb_available && HAVE_RAFTLB=1 || log "raftlb: binary missing, skipped ($RAFTLB_BIN)"
{ echo "date: $(date -Is)  host: $(uname -n)  cpus: $(nproc)  git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "DURATION=$DURATION RUNS=$RUNS SCENARIOS=\"$SCENARIOS\" wrk -t2 -c64"
  echo "CPU_RPS=$CPU_RPS CPU_CLIENTS=$CPU_CLIENTS FOOT_CONNS=$FOOT_CONNS IDLE_SECS=$IDLE_SECS STABILITY_SECS=$STABILITY_SECS ulimit -n $(ulimit -n)"
  echo "$(haproxy -v | head -1); $(nginx -v 2>&1); raftlb: $RAFTLB_BIN (available=$HAVE_RAFTLB)"; } >"$OUT/meta.txt"

[[ " $SCENARIOS " == *" https "* ]] && make_certificate
start_backends
BACKEND_PIDS=("${PIDS[@]}")
for sc in $SCENARIOS; do
    if [[ $sc == footprint ]]; then
        log "scenario footprint: idle cluster RSS, RSS per idle connection ($FOOT_CONNS)"
        run_footprint
        continue
    fi
    if [[ $sc == stability ]]; then
        if ((HAVE_RAFTLB)); then
            cluster_under_load || { log "raftlb (stability): FAILED"; FAILED=1; }
            stop_scenario
        fi
        continue
    fi
    log "scenario $sc: starting proxies"
    live=()
    for t in "${TARGETS[@]}"; do
        rc=0; start_proxy "$sc" "$t" || rc=$?
        case $rc in
        0) live+=("$t") ;;
        1) log "$t ($sc): FAILED correctness check"; FAILED=1 ;;
        esac
    done
    for ((r = 1; r <= RUNS && ${#live[@]} > 0; r++)); do
        # Each round starts with the next proxy, so none always runs first
        # (or right after another's load) on the shared cores.
        shift_by=$(((r - 1) % ${#live[@]}))
        order=("${live[@]:shift_by}" "${live[@]:0:shift_by}")
        for mode in ka close; do
            for t in "${order[@]}"; do run_wrk "$sc" "$t" "$mode" "$r"; done
        done
        if [[ $sc == https ]]; then
            for t in "${order[@]}"; do run_h2load "$sc" "$t" "$r"; done
        else
            for t in "${order[@]}"; do run_cpu "$sc" "$t" "$r"; done
        fi
    done
    stop_scenario               # this scenario's proxies; the backends stay
done

{ print_table; print_goals; } | tee "$OUT/table.txt"
log "results: $OUT"
((FAILED == 0)) || { log "some proxy failed its correctness check"; exit 1; }
