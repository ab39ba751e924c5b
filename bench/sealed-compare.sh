#!/usr/bin/env bash
# Same-run cost of sealed sender: one `nightjar-loadgen` binary (BIN, default the release
# build), runs alternating between authenticated sends (`POST .../messages` with the session
# token) and sealed sends (`--sealed`: `POST .../sealed`, no token, Ed25519-signed with the
# conversation's registered key; the sender's own device gets its copy back). Each run: a fresh
# SQLite data directory, DEVICES devices in 1:1 conversations (default 2,000), RATE messages/s
# offered (default 20,000: saturation on 2 cores) for DURATION s (default 15). ROUNDS pairs
# (default 2).
set -u
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/nightjar-loadgen}
run() { # name round flag...
  local name=$1 round=$2 dir=/tmp/nj-sealed-bench/$1-$2
  shift 2
  rm -rf "$dir"; mkdir -p "$dir"
  ulimit -n "$(ulimit -Hn)"
  "$BIN" serve --data-dir "$dir/data" --listen 127.0.0.1:18090 > "$dir/serve.log" 2>&1 &
  local pid=$!
  sleep 1.5
  "$BIN" run --server http://127.0.0.1:18090 --server-pid $pid --state "$dir/state.json" \
      --devices "${DEVICES:-2000}" --rate "${RATE:-20000}" --duration "${DURATION:-15}" \
      --group-size "${GROUP:-2}" --json "$@" > "$dir/out.json" 2> "$dir/run.log"
  kill $pid; wait $pid 2>/dev/null
  python3 - "$dir/out.json" "$name" <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); l=d.get("load") or {}
acc=l.get("accepted",0); cpu=l.get("server_cpu_s")
lat=(d.get("latency") or {})
print(f'{sys.argv[2]:13} accepted/s {l.get("accepted_per_s",0):8.0f}  delivered/s {l.get("delivered_per_s",0):8.0f}  server cpu/msg {1e6*cpu/acc if acc and cpu else float("nan"):6.1f} us  audit {l.get("audit",{})}  errors {d.get("errors")}')
PY
}
for i in $(seq "${ROUNDS:-2}"); do
  run authenticated "$i"
  run sealed "$i" --sealed
done
