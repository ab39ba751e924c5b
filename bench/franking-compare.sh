#!/usr/bin/env bash
# Same-run cost of message franking on the server (docs/reporting.md): one `nightjar-loadgen`
# binary (BIN, default the release build), sealed sends, runs alternating between sends that
# carry a franking commitment (as every client's do: the server computes one HMAC-SHA256 tag
# per accepted message and stores the commitment and the tag with it, 64 bytes, and delivers
# them with each envelope) and sends without one (`--no-franking`: nothing stamped). Each run:
# a fresh SQLite data directory, DEVICES devices in 1:1 conversations (default 2,000), RATE
# messages/s offered (default 20,000: saturation on 2 cores) for DURATION s (default 15).
# ROUNDS pairs (default 3).
set -u
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/nightjar-loadgen}
run() { # name round flag...
  local name=$1 round=$2 dir=/tmp/nj-franking-bench/$1-$2
  shift 2
  rm -rf "$dir"; mkdir -p "$dir"
  ulimit -n "$(ulimit -Hn)"
  "$BIN" serve --data-dir "$dir/data" --listen 127.0.0.1:18091 > "$dir/serve.log" 2>&1 &
  local pid=$!
  sleep 1.5
  "$BIN" run --server http://127.0.0.1:18091 --server-pid $pid --state "$dir/state.json" \
      --devices "${DEVICES:-2000}" --rate "${RATE:-20000}" --duration "${DURATION:-15}" \
      --group-size "${GROUP:-2}" --sealed --json "$@" > "$dir/out.json" 2> "$dir/run.log"
  kill $pid; wait $pid 2>/dev/null
  python3 - "$dir/out.json" "$name" <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); l=d.get("load") or {}
acc=l.get("accepted",0); cpu=l.get("server_cpu_s")
print(f'{sys.argv[2]:11} accepted/s {l.get("accepted_per_s",0):8.0f}  delivered/s {l.get("delivered_per_s",0):8.0f}  server cpu/msg {1e6*cpu/acc if acc and cpu else float("nan"):6.1f} us  audit {l.get("audit",{})}  errors {d.get("errors")}')
PY
}
for i in $(seq "${ROUNDS:-3}"); do
  run franked "$i"
  run unfranked "$i" --no-franking
done
