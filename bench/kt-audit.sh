#!/usr/bin/env bash
# Times `nightjar audit` across many key-transparency epochs: fills a fresh data directory
# with EPOCHS epochs of PER_EPOCH new accounts each (crates/server/examples/kt_fill.rs),
# starts a server on it, and audits from epoch 0 to the newest.
# Usage: bench/kt-audit.sh [EPOCHS=1000] [PER_EPOCH=10]   (PROFILE=debug to skip the release
# build when only checking that it works; its times mean nothing then)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-1000}"
per="${2:-10}"
target="${CARGO_TARGET_DIR:-target}"
profile="${PROFILE:-release}"
# Two builds: with --example, cargo builds only the example, not the `nightjar` binary.
if [ "$profile" = release ]; then
  cargo build --release -p nightjar-cli --bin nightjar
  cargo build --release -p nightjar-server --example kt_fill
  bin="$target/release"
else
  cargo build -p nightjar-cli --bin nightjar
  cargo build -p nightjar-server --example kt_fill
  bin="$target/debug"
fi
data="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
start=$(date +%s.%N)
"$bin/examples/kt_fill" "$data" "$epochs" "$per"
echo "filled in $(echo "$(date +%s.%N) - $start" | bc) s"
"$bin/nightjar" server --data-dir "$data" --listen 127.0.0.1:0 --metrics-listen off \
  2> "$data/server.log" &
server=$!
for _ in $(seq 100); do
  grep -q "listening on http://" "$data/server.log" 2>/dev/null && break
  sleep 0.1
done
url="$(grep -o 'listening on http://[0-9.:]*' "$data/server.log" | head -1 | sed 's/listening on //')"
start=$(date +%s.%N)
"$bin/nightjar" audit --server "$url"
echo "audit of $epochs epochs: $(echo "$(date +%s.%N) - $start" | bc) s"
