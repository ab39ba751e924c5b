# Sourced by the same-run comparison scripts (same-run-compare.sh, sealed-compare.sh,
# franking-compare.sh): one load run against a fresh server, summarised in one line.
#
# one_run NAME BIN PORT DIR [FLAG...]: starts `BIN serve` on 127.0.0.1:PORT with a fresh data
# directory under DIR, runs `BIN run` against it with FLAGs (besides the server, its pid, the
# state file and --json), stops the server and prints NAME with the accepted and delivered
# rates, the server's CPU per accepted message, the audit (lost, duplicates) and the errors.
# The run's output and logs stay in DIR.
one_run() {
  local name=$1 bin=$2 port=$3 dir=$4
  shift 4
  rm -rf "$dir"; mkdir -p "$dir"
  ulimit -n "$(ulimit -Hn)"
  "$bin" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" > "$dir/serve.log" 2>&1 &
  local pid=$!
  sleep 1.5
  "$bin" run --server "http://127.0.0.1:$port" --server-pid $pid --state "$dir/state.json" \
      --json "$@" > "$dir/out.json" 2> "$dir/run.log"
  kill $pid; wait $pid 2>/dev/null
  python3 - "$dir/out.json" "$name" <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); l=d.get("load") or {}
acc=l.get("accepted",0); cpu=l.get("server_cpu_s")
print(f'{sys.argv[2]:13} accepted/s {l.get("accepted_per_s",0):8.0f}  delivered/s {l.get("delivered_per_s",0):8.0f}  server cpu/msg {1e6*cpu/acc if acc and cpu else float("nan"):6.1f} us  audit {l.get("audit",{})}  dup {l.get("duplicates")}  errors {d.get("errors")}')
PY
}
