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
. "$(dirname "$0")/same-run.sh"
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/nightjar-loadgen}
run() { # name round flag...
  local name=$1 round=$2
  shift 2
  one_run "$name" "$BIN" 18091 "/tmp/nj-franking-bench/$name-$round" \
      --devices "${DEVICES:-2000}" --rate "${RATE:-20000}" --duration "${DURATION:-15}" \
      --group-size "${GROUP:-2}" --sealed "$@"
}
for i in $(seq "${ROUNDS:-3}"); do
  run franked "$i"
  run unfranked "$i" --no-franking
done
