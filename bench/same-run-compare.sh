#!/usr/bin/env bash
# Same-run comparison of two builds of the load generator (each embeds its server), run
# alternately so both see the same machine: BASE_BIN and NEW_BIN name the two
# `nightjar-loadgen` binaries (build one in a worktree of the baseline commit with its own
# CARGO_TARGET_DIR). Each run: 2,000 devices in 1:1 conversations, 20,000 messages/s offered
# for 15 s (saturation on 2 cores), a fresh SQLite data directory. ROUNDS pairs (default 2).
set -u
. "$(dirname "$0")/same-run.sh"
BASE_BIN=${BASE_BIN:?path of the baseline nightjar-loadgen}
NEW_BIN=${NEW_BIN:?path of the nightjar-loadgen to compare}
run() { # name bin port round
  one_run "$1" "$2" "$3" "/tmp/nj-bench/$1-$4" --devices 2000 --rate 20000 --duration 15
}
for i in $(seq "${ROUNDS:-2}"); do
  run base "$BASE_BIN" 18080 "$i"
  run new  "$NEW_BIN" 18081 "$i"
done
