#!/usr/bin/env bash
# Rolling in-place upgrade of a raftlb cluster, one node at a time, with
# no request dropped: followers first, the leader last (its leadership,
# and with it the VIPs, handed to an upgraded node first). Each node's
# process is replaced in place (`raftlb run --upgrade`, or SIGUSR2 to the
# running process): its sockets pass to the new binary, only its Raft
# restarts. The script waits until the node answers from a new process
# and has caught up with the leader before going on, and ends by printing
# the cluster's version (it rises by itself once every member supports it).
#
# Usage: deploy/rolling-upgrade.sh --node ADDR [-- CTL_ARGS...]
#   ADDR        any member's Raft/admin address (host:port)
#   CTL_ARGS    passed to every `raftlb ctl` (credentials: --ca, --cert,
#               --key; or --timeout)
# Env:
#   UPGRADE_CMD how to upgrade one node in place, run with `sh -c`; {id} and
#               {addr} are replaced by the node's id and address. E.g.
#                 'ssh lb{id} sudo systemctl kill -s USR2 raftlb'
#                 'ssh lb{id} sudo systemctl reload raftlb'   (ExecReload sends USR2)
#   RAFTLB      the raftlb binary that runs `ctl` (default: raftlb)
#   NODE_TIMEOUT seconds one node may take (default: 60)
set -euo pipefail

die() { echo "rolling-upgrade: $*" >&2; exit 1; }

node=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --node) node="${2:-}"; shift 2 ;;
        --) shift; break ;;
        *) die "unknown argument $1 (usage: --node ADDR [-- CTL_ARGS...])" ;;
    esac
done
[[ -n "$node" ]] || die "--node ADDR is required"
[[ -n "${UPGRADE_CMD:-}" ]] || die "UPGRADE_CMD is required (how to upgrade one node in place; see the script's head)"
ctl_args=("$@")
raftlb=${RAFTLB:-raftlb}
timeout=${NODE_TIMEOUT:-60}
command -v python3 >/dev/null || die "python3 is needed to read ctl's JSON"

ctl() { "$raftlb" ctl --node "$1" "${ctl_args[@]}" "${@:2}"; }

# status ADDR: `ctl --json status` asked of ADDR, or nothing.
status() { ctl "$1" --json status 2>/dev/null || true; }

# field JSON PYTHON-EXPRESSION (over `s`, the status): prints its value.
field() { python3 -c "import json,sys; s=json.loads(sys.argv[1]); print($2)" "$1" 2>/dev/null || true; }

now=$(status "$node")
[[ -n "$now" ]] || die "cannot read the cluster's status from $node"
# id address, followers first, the leader last.
mapfile -t members < <(field "$now" "'\n'.join(f\"{m['id']} {m['address']}\" for m in sorted(s['members'], key=lambda m: (m['id'] == (s['leader'] or {}).get('id'), m['id'])))")
[[ ${#members[@]} -gt 0 ]] || die "no members in $node's status"
echo "rolling-upgrade: ${#members[@]} members, cluster version $(field "$now" "s['cluster_version']")"

for member in "${members[@]}"; do
    read -r id addr <<<"$member"
    start=$(date +%s%N)
    s=$(status "$addr")
    pid=$(field "$s" "[m for m in s['members'] if m['id'] == $id][0].get('pid', 0)")
    [[ -n "$pid" ]] || die "node $id at $addr does not answer"
    leader=$(field "$s" "(s['leader'] or {}).get('id', 0)")
    if [[ "$leader" == "$id" && ${#members[@]} -gt 1 ]]; then
        # Hand leadership (and the VIPs) to the most caught-up other voter.
        ctl "$addr" leader transfer >/dev/null || die "node $id leads and would not hand leadership over"
    fi
    cmd=${UPGRADE_CMD//\{id\}/$id}
    cmd=${cmd//\{addr\}/$addr}
    sh -c "$cmd" || die "node $id: the upgrade command failed: $cmd"
    # Done when the node answers from a new process and every member has
    # applied the same index.
    deadline=$(( $(date +%s) + timeout ))
    until s=$(status "$addr") && [[ -n "$s" ]] &&
        [[ "$(field "$s" "[m for m in s['members'] if m['id'] == $id][0].get('pid', 0)")" != "$pid" ]] &&
        [[ "$(field "$s" "len({m.get('applied_index') for m in s['members']}) == 1 and all('applied_index' in m for m in s['members'])")" == True ]]; do
        (( $(date +%s) < deadline )) || die "node $id: not back and caught up within ${timeout}s (still pid $pid?)"
        sleep 0.2
    done
    printf 'rolling-upgrade: node %s upgraded in %d ms (pid %s -> %s, formats %s)\n' "$id" \
        "$(( ($(date +%s%N) - start) / 1000000 ))" "$pid" \
        "$(field "$s" "[m for m in s['members'] if m['id'] == $id][0]['pid']")" \
        "$(field "$s" "[m for m in s['members'] if m['id'] == $id][0]['formats']")"
done
s=$(status "$node")
echo "rolling-upgrade: done; cluster version $(field "$s" "s['cluster_version']")"
