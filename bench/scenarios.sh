#!/usr/bin/env bash
# The benchmark scenarios of bench/README.md, end to end, on this machine only (loopback).
#
#   bench/scenarios.sh [STEP...]      steps: sqlite tmpfs group acks latency idle postgres
#                                     multinode kill (default: all of them, in that order)
#
# Every run appends one JSON line to $OUT/results.jsonl and its log to $OUT/<step>.log;
# a table is printed at the end. Servers and databases live under $WORK and are stopped on exit.
# Settings (environment):
#   DEVICES=4000          connected devices in the throughput runs
#   RATES="1000 2000 5000 10000 20000"   offered messages/s, SQLite and PostgreSQL
#   DURATION=20           seconds of load per run
#   GROUP=8               devices per conversation in the fan-out runs
#   IDLE_DEVICES="1000 10000 19400"      idle-connection memory runs (fresh server each)
#   MULTI_RATE=20000      offered rate for the one-node / two-node comparison
#   KILL_RATE=2000        offered rate while one of two nodes is SIGKILLed
#   KILL_ARGS=""          more generator options for the kill run, e.g. "--ack-delay-ms 2000"
#   PG_URL=postgres://…   an existing PostgreSQL server (else a private one is started with initdb)
#   NATS_URL=nats://…     an existing NATS server (else a private nats-server is started)
#   OUT=bench/results/<timestamp>   WORK=/tmp/nightjar-bench
#   LOADGEN=… NIGHTJAR=… NO_BUILD=1   other binaries, and skip the cargo build
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)}
WORK=${WORK:-/tmp/nightjar-bench}
DEVICES=${DEVICES:-4000}
RATES=${RATES:-1000 2000 5000 10000 20000}
DURATION=${DURATION:-20}
GROUP=${GROUP:-8}
IDLE_DEVICES=${IDLE_DEVICES:-1000 10000 19400}
MULTI_RATE=${MULTI_RATE:-20000}
KILL_RATE=${KILL_RATE:-2000}
KILL_ARGS=${KILL_ARGS:-}
PG_PORT=${PG_PORT:-5440}
NATS_PORT=${NATS_PORT:-4230}
STEPS=${*:-sqlite tmpfs group acks latency idle postgres multinode kill}

LOADGEN=${LOADGEN:-$ROOT/target/release/nightjar-loadgen}
NIGHTJAR=${NIGHTJAR:-$ROOT/target/release/nightjar}
mkdir -p "$OUT" "$WORK"
PIDS=()

log() { echo "[$(date +%T)] $*" >&2; }

cleanup() {
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    if [ -f "$WORK/pg/data/postmaster.pid" ]; then
        runuser -u postgres -- pg_ctl -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# The server and the generator each need one descriptor per connection.
ulimit -n "$(ulimit -Hn)"

build() {
    [ -n "${NO_BUILD:-}" ] && return 0
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p nightjar-loadgen -p nightjar-cli)
}

wait_healthy() { # URL
    for _ in $(seq 1 200); do
        curl -sf "$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "server at $1 did not become healthy"
    return 1
}

# start_serve NAME PORT [serve options...]: the real server with benchmark limits; sets SERVER_PID.
start_serve() {
    local name=$1 port=$2
    shift 2
    "$LOADGEN" serve --listen "127.0.0.1:$port" "$@" >"$OUT/server-$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_healthy "http://127.0.0.1:$port"
}

# start_node NAME PORT: one node of the multi-node cluster on PostgreSQL + NATS, with the same
# benchmark limits as the single-node runs (the CLI server, with production limits, if this
# generator's `serve` does not take --nats-url); sets SERVER_PID.
start_node() {
    local name=$1 port=$2
    if "$LOADGEN" serve --help 2>/dev/null | grep -q -- '--nats-url'; then
        "$LOADGEN" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$name" --node-id "$name" \
            --database-url "$PG_DB_URL" --nats-url "$NATS_URL" >"$OUT/server-$name.log" 2>&1 &
    else
        "$NIGHTJAR" server --listen "127.0.0.1:$port" --data-dir "$WORK/$name" --node-id "$name" \
            --database-url "$PG_DB_URL" --nats-url "$NATS_URL" >"$OUT/server-$name.log" 2>&1 &
    fi
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_healthy "http://127.0.0.1:$port"
}

stop() { # PID
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# loadgen STEP LABEL ARGS...: one generator run, JSON appended to results.jsonl.
loadgen() {
    local step=$1 label=$2
    shift 2
    log "$step: $label"
    local rc=0
    "$LOADGEN" run --json --label "$step $label" "$@" \
        >>"$OUT/results.jsonl" 2>>"$OUT/$step.log" || rc=$?
    tail -n 12 "$OUT/$step.log" | grep -E "accepted|delivery|per connection|ids:|CPU" >&2 || true
    return $rc
}

# rate_sweep STEP LABEL_SUFFIX PORT DIR [serve options...]: a fresh server on a data directory
# in DIR, setup, then 1:1 load at each of $RATES in turn.
rate_sweep() {
    local step=$1 suffix=$2 port=$3 dir=$4
    shift 4
    rm -rf "$dir" && mkdir -p "$dir"
    start_serve "$step" "$port" --data-dir "$dir/data" "$@"
    local pid=$SERVER_PID url=http://127.0.0.1:$port
    loadgen "$step" setup --server $url --devices "$DEVICES" --setup-only --state "$dir/state.json"
    for rate in $RATES; do
        loadgen "$step" "1:1 rate=$rate$suffix" --server $url --server-pid "$pid" \
            --state "$dir/state.json" --devices "$DEVICES" --rate "$rate" --duration "$DURATION" || true
    done
    stop "$pid"
}

step_sqlite() { # SQLite on disk, 1:1, the offered rates in turn
    rate_sweep sqlite "" 18100 "$WORK/sqlite"
}

step_tmpfs() { # the same on tmpfs: fsync is free, so what remains is CPU
    rate_sweep tmpfs " (tmpfs)" 18101 /dev/shm/nightjar-bench-sqlite
    rm -rf /dev/shm/nightjar-bench-sqlite
}

step_group() { # group fan-out: each message to GROUP-1 devices, same devices count
    local dir=$WORK/group
    rm -rf "$dir" && mkdir -p "$dir"
    start_serve group 18102 --data-dir "$dir/data"
    local pid=$SERVER_PID url=http://127.0.0.1:18102
    loadgen group setup --server $url --devices "$DEVICES" --group-size "$GROUP" --setup-only \
        --state "$dir/state.json"
    for rate in $RATES; do
        loadgen group "groups of $GROUP rate=$rate" --server $url --server-pid "$pid" \
            --state "$dir/state.json" --devices "$DEVICES" --group-size "$GROUP" --rate "$rate" \
            --duration "$DURATION" || true
    done
    stop "$pid"
}

step_acks() { # what acknowledgements cost: groups of 8, the same load with and without acks
    local dir=$WORK/acks
    rm -rf "$dir" && mkdir -p "$dir"
    start_serve acks 18105 --data-dir "$dir/data"
    local pid=$SERVER_PID url=http://127.0.0.1:18105
    loadgen acks setup --server $url --devices 2000 --group-size 8 --setup-only \
        --state "$dir/state.json"
    loadgen acks "groups of 8 rate=200 with acks" --server $url --server-pid "$pid" \
        --state "$dir/state.json" --devices 2000 --group-size 8 --rate 200 --duration 15 || true
    loadgen acks "groups of 8 rate=200 --no-ack" --server $url --server-pid "$pid" \
        --state "$dir/state.json" --devices 2000 --group-size 8 --rate 200 --duration 15 \
        --no-ack || true
    stop "$pid"
}

step_latency() { # the latency target: 5,000 msg/s for longer, SQLite on disk
    local dir=$WORK/sqlite
    [ -f "$dir/state.json" ] || step_sqlite
    start_serve latency 18103 --data-dir "$dir/data"
    local pid=$SERVER_PID
    loadgen latency "1:1 rate=5000 60s" --server http://127.0.0.1:18103 --server-pid "$pid" \
        --state "$dir/state.json" --devices "$DEVICES" --rate 5000 --duration 60 || true
    stop "$pid"
}

step_idle() { # memory per idle connection: a fresh server for each count
    local dir=$WORK/idle max=0
    for n in $IDLE_DEVICES; do [ "$n" -gt "$max" ] && max=$n; done
    rm -rf "$dir" && mkdir -p "$dir"
    start_serve idle-setup 18104 --data-dir "$dir/data"
    loadgen idle setup --server http://127.0.0.1:18104 --devices "$max" --setup-only \
        --state "$dir/state.json"
    stop "$SERVER_PID"
    for n in $IDLE_DEVICES; do
        start_serve idle 18104 --data-dir "$dir/data"
        loadgen idle "idle devices=$n" --server http://127.0.0.1:18104 --server-pid "$SERVER_PID" \
            --state "$dir/state.json" --devices "$n" --idle --duration 20 || true
        stop "$SERVER_PID"
    done
}

ensure_postgres() {
    if [ -n "${PG_URL:-}" ]; then return; fi
    local data=$WORK/pg/data
    if [ ! -f "$data/PG_VERSION" ]; then
        log "initdb $data"
        mkdir -p "$WORK/pg" && chown postgres "$WORK/pg"
        runuser -u postgres -- initdb -D "$data" -A trust -U postgres >/dev/null
    fi
    runuser -u postgres -- pg_ctl -D "$data" -l "$WORK/pg/log" -w start \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=1GB" \
        >/dev/null
    PG_URL=postgres://postgres@127.0.0.1:$PG_PORT
}

fresh_db() { # NAME: drops and creates a database, sets PG_DB_URL
    psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
    PG_DB_URL=$PG_URL/$1
}

ensure_nats() {
    if [ -n "${NATS_URL:-}" ]; then return; fi
    nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/nats.log" 2>&1 &
    PIDS+=("$!")
    NATS_URL=nats://127.0.0.1:$NATS_PORT
    sleep 0.5
}

step_postgres() { # one node on PostgreSQL, the offered rates in turn
    ensure_postgres
    fresh_db nightjar_bench_pg
    rate_sweep postgres " (PostgreSQL)" 18110 "$WORK/postgres" --database-url "$PG_DB_URL"
}

multinode_ready() {
    if ! { "$NIGHTJAR" server --help; "$LOADGEN" serve --help; } 2>/dev/null | grep -q -- '--nats-url'; then
        log "multinode: neither \`nightjar server\` nor \`nightjar-loadgen serve\` takes --nats-url yet; skipped"
        return 1
    fi
}

# Setup runs through one `serve` node without NATS (benchmark limits: the production limits
# allow 30 registrations per address per 15 minutes).
multinode_setup() { # DB STATE
    fresh_db "$1"
    start_serve "$1-setup" 18120 --data-dir "$WORK/$1-setup" --database-url "$PG_DB_URL"
    loadgen multinode setup --server http://127.0.0.1:18120 --devices "$DEVICES" --setup-only \
        --state "$2"
    stop "$SERVER_PID"
}

step_multinode() { # the same offered load on one node, then on two (PostgreSQL + NATS)
    multinode_ready || return 0
    ensure_postgres
    ensure_nats
    local state=$WORK/multinode-state.json
    rm -f "$state"
    multinode_setup nightjar_bench_multi "$state"
    start_node node-a 18121
    local a=$SERVER_PID
    loadgen multinode "one node rate=$MULTI_RATE" --server http://127.0.0.1:18121 --server-pid "$a" \
        --state "$state" --devices "$DEVICES" --rate "$MULTI_RATE" --duration "$DURATION" || true
    start_node node-b 18122
    local b=$SERVER_PID
    loadgen multinode "two nodes rate=$MULTI_RATE" --server http://127.0.0.1:18121 \
        --server http://127.0.0.1:18122 --server-pid "$a" --server-pid "$b" --state "$state" \
        --devices "$DEVICES" --rate "$MULTI_RATE" --duration "$DURATION" || true
    stop "$a"
    stop "$b"
}

step_kill() { # two nodes under load, one SIGKILLed mid-run; every id checked
    multinode_ready || return 0
    ensure_postgres
    ensure_nats
    local state=$WORK/kill-state.json
    rm -f "$state"
    multinode_setup nightjar_bench_kill "$state"
    start_node kill-a 18131
    local a=$SERVER_PID
    start_node kill-b 18132
    local b=$SERVER_PID
    (sleep $((DURATION / 2 + 5)) && log "kill -9 $b" && kill -9 "$b") &
    loadgen kill "SIGKILL one of two nodes rate=$KILL_RATE" --check --server http://127.0.0.1:18131 \
        --server http://127.0.0.1:18132 --server-pid "$a" --state "$state" --devices "$DEVICES" \
        --rate "$KILL_RATE" --duration "$DURATION" --drain-timeout 60 $KILL_ARGS ||
        log "kill: the check FAILED (see $OUT/kill.log)"
    stop "$a"
}

summary() {
    [ -s "$OUT/results.jsonl" ] || return 0
    printf '\n%-44s %9s %9s %9s %9s %9s %9s %7s %7s %9s\n' run offered accepted/s deliv/s \
        p50_ms p99_ms p999_ms lost dup B/conn >&2
    jq -r 'select(.connected > 0) | [.label, .rate,
        (.load.accepted_per_s // 0 | floor), (.load.delivered_per_s // 0 | floor),
        ((.load.latency.p50_us // 0) / 1000), ((.load.latency.p99_us // 0) / 1000),
        ((.load.latency.p999_us // 0) / 1000), (.load.audit.lost_messages // 0),
        (.load.duplicates // 0), (.memory.server_bytes_per_connection // "-")] | @tsv' \
        "$OUT/results.jsonl" |
        while IFS=$'\t' read -r l r a d p50 p99 p999 lost dup mem; do
            printf '%-44s %9s %9s %9s %9.1f %9.1f %9.1f %7s %7s %9s\n' \
                "$l" "$r" "$a" "$d" "$p50" "$p99" "$p999" "$lost" "$dup" "$mem" >&2
        done
    log "results: $OUT/results.jsonl"
}

build
for step in $STEPS; do
    "step_$step"
done
summary
