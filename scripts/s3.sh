#!/usr/bin/env bash
# Starts an S3-compatible server for the tests of the attachment store unless one is already
# listening on 127.0.0.1:9010, then prints the variables the tests read:
#   eval "$(scripts/s3.sh)"
# The server is s3s-fs (an S3 API over a directory), built from crates.io with cargo install
# into /var/tmp/nightjar-tools/s3s-fs the first time (a few minutes on two cores; later runs
# reuse it). It listens on loopback only, with fixed test keys, and keeps its data under
# /var/tmp/nightjar-s3 (one directory per bucket). Production uses Garage (docs/attachments.md),
# never this. Safe to run again: a running server is reused. `scripts/s3.sh --build-only` only
# builds s3s-fs (when missing) and prints nothing.
set -euo pipefail

tools="${NIGHTJAR_TOOLS:-/var/tmp/nightjar-tools}"
dir="${NIGHTJAR_S3_DIR:-/var/tmp/nightjar-s3}"
port=9010
version=0.14.1
bin="$tools/s3s-fs/bin/s3s-fs"
bucket=nightjar-test
access_key=nightjar-test
secret_key=nightjar-test-secret-key

if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -qF "$version"; then
  if ! command -v cargo >/dev/null 2>&1; then
    echo "s3.sh: cargo is needed to build s3s-fs" >&2
    exit 1
  fi
  echo "s3.sh: building s3s-fs $version into $tools/s3s-fs (once; a few minutes)" >&2
  mkdir -p "$tools"
  # Its own temporary target directory (not the workspace's shared one, whose lock a running
  # build holds), and the versions its lock file names.
  env -u CARGO_TARGET_DIR cargo install s3s-fs --version "=$version" --features binary \
    --locked --root "$tools/s3s-fs" >&2
fi

if [ "${1:-}" = "--build-only" ]; then
  exit 0
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
ours() { [ -s "$dir/s3s-fs.pid" ] && kill -0 "$(cat "$dir/s3s-fs.pid")" 2>/dev/null; }

mkdir -p "$dir"
chmod 700 "$dir"
if listening; then
  if ! ours; then
    echo "s3.sh: something else listens on 127.0.0.1:$port; assuming it is an S3 server" \
      "with bucket $bucket and the test keys" >&2
  fi
else
  # A fresh start: what earlier runs left behind goes.
  rm -rf "$dir/data" "$dir/s3s-fs.pid"
  mkdir -p "$dir/data/$bucket"
  # Detached, its output in a log file, so that `$(scripts/s3.sh)` does not wait for it. It
  # runs in its own directory: s3s-fs resolves every object path against its working
  # directory, and the clone it was started from may be deleted while it keeps running.
  (cd "$dir" && RUST_LOG=warn exec setsid "$bin" --host 127.0.0.1 --port "$port" \
    --access-key "$access_key" --secret-key "$secret_key" "$dir/data" \
    </dev/null >"$dir/s3s-fs.log" 2>&1) &
  echo $! >"$dir/s3s-fs.pid"
  for _ in $(seq 50); do
    listening && break
    sleep 0.2
  done
  if ! listening; then
    echo "s3.sh: s3s-fs did not start listening on 127.0.0.1:$port; see $dir/s3s-fs.log" >&2
    exit 1
  fi
fi

printf 'export NIGHTJAR_TEST_S3_ENDPOINT=%q\n' "http://127.0.0.1:$port"
printf 'export NIGHTJAR_TEST_S3_BUCKET=%q\n' "$bucket"
printf 'export NIGHTJAR_TEST_S3_ACCESS_KEY_ID=%q\n' "$access_key"
printf 'export NIGHTJAR_TEST_S3_SECRET_ACCESS_KEY=%q\n' "$secret_key"
# Where s3s-fs keeps the objects (tests search it for plaintext).
printf 'export NIGHTJAR_TEST_S3_DATA_DIR=%q\n' "$dir/data"
