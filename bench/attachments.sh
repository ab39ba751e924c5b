#!/usr/bin/env bash
# Attachment throughput and memory: sends a file of SIZE_MIB (default 1024) from one CLI profile
# to another through a local release server, all on the same disk, and sets it against `cp` of
# the same file on that disk in the same run.
#
#   cargo build --release -p nightjar-cli
#   bench/attachments.sh [SIZE_MIB] [--blob-store s3://BUCKET ...server flags]
#
# Prints: cp MB/s; upload (send --file: encrypt pass, then encrypt and upload every part) MB/s
# and its ratio to cp; download (sync: fetch, verify, decrypt) MB/s and ratio; the peak
# resident memory of the sending and the receiving process (GNU time's maximum RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-1024}"
shift || true
bin="${NIGHTJAR_BIN:-${CARGO_TARGET_DIR:-target}/release/nightjar}"
work="${NIGHTJAR_BENCH_DIR:-/var/tmp/nightjar-attachment-bench}"
rm -rf "$work"
mkdir -p "$work"
export NIGHTJAR_PASSWORD='bench password 1234' NIGHTJAR_KEYRING=off

"$bin" server --data-dir "$work/server" --listen 127.0.0.1:0 "$@" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "listening on http://" "$work/server.log" 2>/dev/null && break
  sleep 0.1
done
url="$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | head -1 | sed 's/listening on //')"
"$bin" --profile "$work/a" register --server "$url" alice >/dev/null
"$bin" --profile "$work/b" register --server "$url" bob >/dev/null
"$bin" --profile "$work/b" accept alice >/dev/null

head -c "$((size_mib << 20))" /dev/urandom >"$work/file.bin"
sync
seconds() { date +%s.%N; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }
bytes=$((size_mib << 20))

t0=$(seconds)
cp "$work/file.bin" "$work/copy.bin"
sync
t1=$(seconds)
cp_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
rm -f "$work/copy.bin"

t0=$(seconds)
/usr/bin/time -f "%M" -o "$work/send.rss" \
  "$bin" --profile "$work/a" send bob --file "$work/file.bin" >/dev/null 2>"$work/send.err"
sync
t1=$(seconds)
up_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')

t0=$(seconds)
/usr/bin/time -f "%M" -o "$work/sync.rss" \
  "$bin" --profile "$work/b" sync --save-dir "$work/saved" >/dev/null 2>"$work/sync.err"
sync
t1=$(seconds)
down_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
cmp -s "$work/file.bin" "$work/saved/file.bin" || { echo "the received file differs" >&2; exit 1; }

cp_mbps=$(mbps "$bytes" "$cp_s")
up_mbps=$(mbps "$bytes" "$up_s")
down_mbps=$(mbps "$bytes" "$down_s")
echo "file: ${size_mib} MiB"
echo "cp: ${cp_mbps} MB/s (${cp_s} s)"
echo "upload (send --file): ${up_mbps} MB/s (${up_s} s), $(awk -v a="$up_mbps" -v b="$cp_mbps" 'BEGIN { printf "%.2f", a / b }') x cp"
echo "download (sync): ${down_mbps} MB/s (${down_s} s), $(awk -v a="$down_mbps" -v b="$cp_mbps" 'BEGIN { printf "%.2f", a / b }') x cp"
echo "peak RSS: sender $(( $(tail -1 "$work/send.rss") / 1024 )) MiB, receiver $(( $(tail -1 "$work/sync.rss") / 1024 )) MiB"
rm -rf "$work"
