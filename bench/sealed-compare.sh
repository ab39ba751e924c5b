#!/usr/bin/env bash
# Same-run cost of sealed sender: one `nightjar-loadgen` binary (BIN, default the release
# build), runs alternating between authenticated sends (`POST .../messages` with the session
# token) and sealed sends (`--sealed`: `POST .../sealed`, no token, Ed25519-signed with the
# conversation's registered key; the sender's own device gets its copy back). Each run: a fresh
# SQLite data directory, DEVICES devices in 1:1 conversations (default 2,000), RATE messages/s
# offered (default 20,000: saturation on 2 cores) for DURATION s (default 15). ROUNDS pairs
# (default 2).
set -u
. "$(dirname "$0")/same-run.sh"
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/nightjar-loadgen}
run() { # name round flag...
  local name=$1 round=$2
  shift 2
  one_run "$name" "$BIN" 18090 "/tmp/nj-sealed-bench/$name-$round" \
      --devices "${DEVICES:-2000}" --rate "${RATE:-20000}" --duration "${DURATION:-15}" \
      --group-size "${GROUP:-2}" "$@"
}
for i in $(seq "${ROUNDS:-2}"); do
  run authenticated "$i"
  run sealed "$i" --sealed
done
