#!/usr/bin/env bash
# Same-run comparison of two builds of the load generator (each embeds its server), run
# alternately so both see the same machine: BASE_BIN and NEW_BIN name the two
# `nightjar-loadgen` binaries (build one in a worktree of the baseline commit with its own
# CARGO_TARGET_DIR). Each run: 2,000 devices in 1:1 conversations, 20,000 messages/s offered
# for 15 s (saturation on 2 cores), a fresh SQLite data directory. ROUNDS pairs (default 2).
set -u
BASE_BIN=${BASE_BIN:?path of the baseline nightjar-loadgen}
NEW_BIN=${NEW_BIN:?path of the nightjar-loadgen to compare}
run() { # name bin port
  local name=$1 bin=$2 port=$3 dir=/tmp/nj-bench/$1-$4
  rm -rf "$dir"; mkdir -p "$dir"
  ulimit -n "$(ulimit -Hn)"
  "$bin" serve --data-dir "$dir/data" --listen 127.0.0.1:$port > "$dir/serve.log" 2>&1 &
  local pid=$!
  sleep 1.5
  "$bin" run --server http://127.0.0.1:$port --server-pid $pid --state "$dir/state.json" \
      --devices 2000 --rate 20000 --duration 15 --json > "$dir/out.json" 2> "$dir/run.log"
  kill $pid; wait $pid 2>/dev/null
  python3 - "$dir/out.json" "$name" <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); l=d.get("load") or {}
acc=l.get("accepted",0); cpu=l.get("server_cpu_s")
print(f'{sys.argv[2]:5} accepted/s {l.get("accepted_per_s",0):8.0f}  delivered/s {l.get("delivered_per_s",0):8.0f}  cpu/msg {1e6*cpu/acc if acc and cpu else float("nan"):6.1f} us  lost {l.get("audit",{})}  dup {l.get("duplicates")}  errors {d.get("errors")}')
PY
}
for i in $(seq "${ROUNDS:-2}"); do
  run base "$BASE_BIN" 18080 "$i"
  run new  "$NEW_BIN" 18081 "$i"
done
