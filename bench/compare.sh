#!/usr/bin/env bash
# Runs the same workloads against etcd (Debian's etcd-server) and cairn, each as a cluster of
# MEMBERS members (1 or 3; default 1) on loopback, side by side in one run, and prints a Markdown
# table with cairn/etcd ratios. KV clients spread their connections over every member; watchers
# sit on one member (a follower, when there are three) and the writer on the leader. Each workload
# runs against etcd and cairn in turn, ROUNDS times; figures are medians.
#
#   bench/compare.sh                # after `make build`; `make bench` does both
#   MEMBERS=3 bench/compare.sh      # three-member clusters
#   ROUNDS=5 bench/compare.sh       # more rounds, steadier medians
#   WARMUP_PUTS=0 bench/compare.sh  # measure fresh clusters (default: 80,000 puts to each first)
#   WORKLOADS=watch bench/compare.sh  # only some of the tables: kv, watch, failover, plugin, lock
#                                     # (default all; failover needs MEMBERS=3)
#
# The plugin table is cairn's alone (etcd has no plugins): a no-op plugin call through the log
# against a put, each shape run against the same cairn cluster in turn, ROUNDS times, with the
# call/put throughput ratio; then the cost of one call in-process (instantiate, call, drop).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}
cairn=$target/release/cairn
bench=$target/release/cairn-bench
rounds=${ROUNDS:-3}
warmup_puts=${WARMUP_PUTS:-80000}
[[ $warmup_puts =~ ^[0-9]+$ ]] || { echo "WARMUP_PUTS must be a number of puts, not '$warmup_puts'" >&2; exit 1; }
for binary in "$cairn" "$bench"; do
  [ -x "$binary" ] || { echo "missing $binary: run make build first" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() {
  for _ in $(seq 1 200); do
    ETCDCTL_API=3 etcdctl --endpoints "$1" endpoint status >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not start" >&2
  exit 1
}

members=${MEMBERS:-1}
workload_tables=${WORKLOADS:-kv watch failover plugin lock}

# wants TABLE: whether WORKLOADS asks for TABLE.
wants() { [[ " $workload_tables " == *" $1 "* ]]; }

# Only the tables that compare with etcd need it.
if wants kv || wants watch || wants lock || { wants failover && [ "$members" -ge 3 ]; }; then with_etcd=1; else with_etcd=; fi
[ -z "$with_etcd" ] || command -v etcd >/dev/null || { echo "etcd not found: run make setup" >&2; exit 1; }
plugins=$target/plugins
if wants plugin; then
  for component in "$plugins/noop.wasm" "$plugins/counter.wasm"; do
    [ -f "$component" ] || { echo "missing $component: run make plugins first" >&2; exit 1; }
  done
fi

# Each member's client URL and process ID, by client URL, so a member can be killed and restarted.
declare -A member_pid member_command

# start_member URL: (re)starts the member serving clients at URL with the command it was given.
start_member() {
  bash -c "exec ${member_command[$1]}" &
  member_pid[$1]=$!
  pids+=($!)
}

# start_cluster etcd|cairn: starts $members members; sets $endpoints to their client URLs,
# comma-separated.
start_cluster() {
  local kind=$1 initial="" names=() clients=() peers=()
  for i in $(seq 1 "$members"); do
    names+=("$kind$i"); clients+=("http://127.0.0.1:$(free_port)"); peers+=("http://127.0.0.1:$(free_port)")
    initial+="${initial:+,}$kind$i=${peers[-1]}"
  done
  for i in "${!names[@]}"; do
    local flags="--name ${names[$i]} --data-dir $work/${names[$i]}"
    flags+=" --listen-client-urls ${clients[$i]} --advertise-client-urls ${clients[$i]}"
    flags+=" --listen-peer-urls ${peers[$i]} --initial-advertise-peer-urls ${peers[$i]}"
    flags+=" --initial-cluster $initial"
    if [ "$kind" = etcd ]; then
      member_command[${clients[$i]}]="etcd $flags >>$work/${names[$i]}.log 2>&1"
    else
      member_command[${clients[$i]}]="env CAIRN_LOG=warn $cairn serve $flags >>$work/${names[$i]}.log 2>&1"
    fi
    start_member "${clients[$i]}"
  done
  endpoints=$(IFS=,; echo "${clients[*]}")
  for url in "${clients[@]}"; do wait_ready "$url"; done
  wait_writable "$endpoints"
}

# wait_writable ENDPOINTS: waits until a put through ENDPOINTS succeeds (there is a leader).
wait_writable() {
  for _ in $(seq 1 300); do
    ETCDCTL_API=3 etcdctl --endpoints "$1" --command-timeout=1s put bench/ready yes >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "no leader at $1" >&2
  exit 1
}

# leader_of ENDPOINTS: prints the client URL of the leader among ENDPOINTS.
leader_of() {
  ETCDCTL_API=3 etcdctl --endpoints "$1" endpoint status -w json | python3 -c '
import json, sys
print(next(s["Endpoint"] for s in json.load(sys.stdin) if s["Status"]["leader"] == s["Status"]["header"]["member_id"]))'
}

# follower_of ENDPOINTS: prints the client URL of a member that does not lead (none on one member).
follower_of() {
  local leader
  leader=$(leader_of "$1")
  tr , '\n' <<<"$1" | grep -vx "$leader" | head -n 1 || true
}

# watch_endpoints ENDPOINTS: prints a follower's URL, then the leader's. cairn-bench watches on
# the first and writes through the last, so on a cluster every event crosses from the leader to
# a follower, the same path for etcd and cairn whichever member won the election.
watch_endpoints() {
  local follower
  follower=$(follower_of "$1")
  echo "${follower:+$follower,}$(leader_of "$1")"
}

# targets ENDPOINTS all|leader|follower: the endpoints a workload runs against. A single client
# has one connection, so it goes to the leader or to a follower on purpose, the same for etcd and
# cairn, rather than to whichever member happens to be listed first.
targets() {
  case $2 in
    all) echo "$1" ;;
    leader) leader_of "$1" ;;
    follower) follower_of "$1" ;;
  esac
}

# failover_ms ENDPOINTS: SIGKILLs the leader, then prints the milliseconds until a put through
# the other members succeeds; restarts the killed member and waits until it is back.
failover_ms() {
  local leader others start end
  leader=$(leader_of "$1")
  others=$(tr , '\n' <<<"$1" | grep -vx "$leader" | paste -sd,)
  start=$(date +%s%N)
  kill -9 "${member_pid[$leader]}"
  until ETCDCTL_API=3 etcdctl --endpoints "$others" --command-timeout=200ms put bench/failover yes >/dev/null 2>&1; do :; done
  end=$(date +%s%N)
  echo $(((end - start) / 1000000))
  start_member "$leader"
  wait_ready "$leader"
  wait_writable "$1"
  # Let the restarted member catch up before the next measurement.
  sleep 2
}

# warm_up ENDPOINTS: puts WARMUP_PUTS times (about 28 MB of log by default) before anything is
# measured, so every row sees the cluster in its steady state. etcd's WAL writes within
# preallocated segments from the start; cairn's log writes over retired write-ahead files, and
# RocksDB reuses only files retired since the member started: the third 8 MB file is the first
# written over, after about 16 MB (see crates/cairn-raft/src/log_store.rs).
warm_up() {
  [ "$warmup_puts" -eq 0 ] || "$bench" --endpoints "$1" --clients 256 --conns 16 --total "$warmup_puts" put >/dev/null
}

if [ -n "$with_etcd" ]; then start_cluster etcd; etcd_url=$endpoints; warm_up "$etcd_url"; fi
start_cluster cairn; cairn_url=$endpoints; warm_up "$cairn_url"

# name | members to run against (all, leader or follower) | cairn-bench arguments
workloads=(
  "put, 1 client, to the leader|leader|--clients 1 --conns 1 --total 2000 put"
  "put, 64 clients / 8 conns|all|--clients 64 --conns 8 --total 30000 put"
  "put, 256 clients / 16 conns|all|--clients 256 --conns 16 --total 60000 put"
  "range linearizable, 16 clients / 4 conns|all|--clients 16 --conns 4 --total 60000 range --consistency l"
  "range serializable, 16 clients / 4 conns|all|--clients 16 --conns 4 --total 60000 range --consistency s"
)
# On a cluster, the single client also writes through a follower.
if [ "$members" -ge 3 ]; then
  workloads=("${workloads[0]}" "put, 1 client, to a follower|follower|--clients 1 --conns 1 --total 2000 put" "${workloads[@]:1}")
fi
# The plugin table's shapes: name | cairn-bench load options, the same for the put and the call.
plugin_shapes=(
  "1 client|--clients 1 --conns 1 --total 2000"
  "256 clients / 16 conns|--clients 256 --conns 16 --total 60000"
)
# 16 clients, each with a connection and a lease of its own, contending for locks through the
# v3lock service: name | cairn-bench arguments.
lock_workloads=(
  "16 clients, one lock|all|--clients 16 --conns 16 --total 2000 lock --locks 1"
  "16 clients, 16 locks|all|--clients 16 --conns 16 --total 8000 lock --locks 16"
)
# In-process calls: name | cairn-bench instantiate options.
instantiate_workloads=(
  "noop \`noop\`|--component $plugins/noop.wasm --function noop"
  "counter \`incr\`, one key|--component $plugins/counter.wasm --function incr --input counter/bench"
)
# 10,000 watchers on one member, 1,000 puts at 200/s; each put reaches FANOUT watchers, so the
# rows step the event rate from 2,000 to 200,000 per second.
watch_workloads=(
  "fan-out 10|--conns 4 --total 1000 watch --watchers 10000 --streams 100 --fanout 10 --rate 200"
  "fan-out 100|--conns 4 --total 1000 watch --watchers 10000 --streams 100 --fanout 100 --rate 200"
  "fan-out 1000|--conns 4 --total 1000 watch --watchers 10000 --streams 100 --fanout 1000 --rate 200"
)

# field NAME: the value of NAME=value in each line (one field a line, so p50_ms never matches
# put_p50_ms).
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# med FIELD etcd|cairn: the median of FIELD over the last rounds against etcd or cairn.
med() { field "$1" <"$work/$2.out" | median; }
ratio() { awk -v c="$1" -v e="$2" 'BEGIN {printf "%.2f", c / e}'; }

# run_rounds ETCD_ENDPOINTS CAIRN_ENDPOINTS ARGUMENTS...: runs cairn-bench ROUNDS times against
# etcd and cairn in turn, into $work/etcd.out and $work/cairn.out.
run_rounds() {
  local etcd=$1 cairn=$2
  shift 2
  : >"$work/etcd.out"; : >"$work/cairn.out"
  for _ in $(seq 1 "$rounds"); do
    "$bench" --endpoints "$etcd" "$@" >>"$work/etcd.out"
    "$bench" --endpoints "$cairn" "$@" >>"$work/cairn.out"
  done
}

# throughput_rows WORKLOAD...: for each "name|members|cairn-bench arguments", runs the rounds
# against etcd and cairn and prints a table row: throughputs, their ratio and latencies.
throughput_rows() {
  local workload name members_to arguments et ct
  for workload in "$@"; do
    name=${workload%%|*}
    members_to=${workload#*|}; members_to=${members_to%%|*}
    read -r -a arguments <<<"${workload#*|*|}"
    run_rounds "$(targets "$etcd_url" "$members_to")" "$(targets "$cairn_url" "$members_to")" "${arguments[@]}"
    et=$(med throughput etcd); ct=$(med throughput cairn)
    printf "| %s | %.0f | %.0f | %s | %s / %s | %s / %s |\n" "$name" "$et" "$ct" "$(ratio "$ct" "$et")" \
      "$(med p50_ms etcd)" "$(med p99_ms etcd)" "$(med p50_ms cairn)" "$(med p99_ms cairn)"
  done
}

# alternate A|B ARGUMENTS_A -- ARGUMENTS_B: runs cairn-bench with each in turn, ROUNDS times, into
# $work/A.out and $work/B.out.
alternate() {
  local a=${1%|*} b=${1#*|} first=() second=()
  shift
  while [ "$1" != -- ]; do first+=("$1"); shift; done
  shift
  second=("$@")
  : >"$work/$a.out"; : >"$work/$b.out"
  for _ in $(seq 1 "$rounds"); do
    "$bench" "${first[@]}" >>"$work/$a.out"
    "$bench" "${second[@]}" >>"$work/$b.out"
  done
}

echo "$members-member clusters, $rounds rounds, medians"

if wants kv; then
  echo
  echo "| workload | etcd req/s | cairn req/s | cairn/etcd | etcd p50 / p99 ms | cairn p50 / p99 ms |"
  echo "|---|---:|---:|---:|---:|---:|"
  throughput_rows "${workloads[@]}"
fi

if wants watch; then
  etcd_watch=$(watch_endpoints "$etcd_url"); cairn_watch=$(watch_endpoints "$cairn_url")
  echo
  echo -n "| watch: 10,000 watchers / 100 streams, 1,000 puts at 200/s | etcd p50 / p99 ms"
  echo -n " | cairn p50 / p99 ms | cairn/etcd p50 / p99 | etcd delivered / expected"
  echo " | cairn delivered / expected | etcd / cairn events/s | etcd / cairn put p50 ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for workload in "${watch_workloads[@]}"; do
    name=${workload%%|*}
    read -r -a arguments <<<"${workload#*|}"
    run_rounds "$etcd_watch" "$cairn_watch" "${arguments[@]}"
    e50=$(med p50_ms etcd); e99=$(med p99_ms etcd); c50=$(med p50_ms cairn); c99=$(med p99_ms cairn)
    expected=$(med expected etcd)
    printf "| %s | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s | %.0f / %.0f | %s / %s |\n" "$name" \
      "$e50" "$e99" "$c50" "$c99" "$(ratio "$c50" "$e50")" "$(ratio "$c99" "$e99")" \
      "$(med delivered etcd)" "$expected" "$(med delivered cairn)" "$expected" \
      "$(med events_per_s etcd)" "$(med events_per_s cairn)" "$(med put_p50_ms etcd)" "$(med put_p50_ms cairn)"
  done
fi

if wants plugin; then
  "$cairn" plugin deploy noop "$plugins/noop.wasm" --endpoints "$cairn_url" >/dev/null
  echo
  echo "| shape ($members-member cairn) | put req/s | noop call req/s | call/put | put p50 / p99 ms | call p50 / p99 ms |"
  echo "|---|---:|---:|---:|---:|---:|"
  for shape in "${plugin_shapes[@]}"; do
    name=${shape%%|*}
    read -r -a options <<<"${shape#*|}"
    alternate "put|call" --endpoints "$cairn_url" "${options[@]}" put \
      -- --endpoints "$cairn_url" "${options[@]}" call --plugin noop --function noop
    pt=$(med throughput put); ct=$(med throughput call)
    printf "| %s | %.0f | %.0f | %s | %s / %s | %s / %s |\n" "$name" "$pt" "$ct" "$(ratio "$ct" "$pt")" \
      "$(med p50_ms put)" "$(med p99_ms put)" "$(med p50_ms call)" "$(med p99_ms call)"
  done
  echo
  echo "| in-process call (instantiate + call + drop), 20,000 calls | mean µs | p50 µs | p99 µs | calls/s |"
  echo "|---|---:|---:|---:|---:|"
  for workload in "${instantiate_workloads[@]}"; do
    name=${workload%%|*}
    read -r -a options <<<"${workload#*|}"
    : >"$work/instantiate.out"
    for _ in $(seq 1 "$rounds"); do
      "$bench" --total 20000 instantiate "${options[@]}" >>"$work/instantiate.out"
    done
    printf "| %s | %s | %s | %s | %.0f |\n" "$name" "$(med mean_us instantiate)" "$(med p50_us instantiate)" \
      "$(med p99_us instantiate)" "$(med throughput instantiate)"
  done
fi

if wants lock; then
  echo
  echo "| v3lock Lock + Unlock | etcd acquisitions/s | cairn acquisitions/s | cairn/etcd | etcd p50 / p99 ms | cairn p50 / p99 ms |"
  echo "|---|---:|---:|---:|---:|---:|"
  throughput_rows "${lock_workloads[@]}"
fi

# Last, since it restarts members: a restarted cairn member has no retired write-ahead files to
# write over until it has logged about 16 MB again (see warm_up).
if wants failover && [ "$members" -ge 3 ]; then
  : >"$work/etcd.failover"; : >"$work/cairn.failover"
  for _ in $(seq 1 "$rounds"); do
    failover_ms "$etcd_url" >>"$work/etcd.failover"
    failover_ms "$cairn_url" >>"$work/cairn.failover"
  done
  ef=$(median <"$work/etcd.failover"); cf=$(median <"$work/cairn.failover")
  echo
  echo "| failover (leader SIGKILLed; ms until a put through another member succeeds) | etcd | cairn | cairn/etcd |"
  echo "|---|---:|---:|---:|"
  printf "| default election timeouts (etcd 1000 ms, cairn 1000 ms) | %s | %s | %s |\n" "$ef" "$cf" \
    "$(ratio "$cf" "$ef")"
fi
