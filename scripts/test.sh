#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit/property/simulation tests, the adversarial
# suites, the API document checked against the server (schemathesis), the wasm32 build of
# the core engine, and the web app in a real browser. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

# Background jobs (the S3 server's first build, the web app's build) run in sessions of their
# own, so that a failing step stops them with the script instead of leaving them orphaned and
# holding their target directory's lock.
background=()
stop_background() {
  for pid in "${background[@]}"; do
    kill -- "-$pid" 2>/dev/null || true
  done
}
trap stop_background EXIT
target_dir="$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)"

# The attachment store's tests also run against an S3-compatible server on loopback (s3s-fs,
# built from crates.io into /var/tmp/nightjar-tools the first time, beside the workspace's
# build), started here unless configured already.
if [ -z "${NIGHTJAR_TEST_S3_ENDPOINT:-}" ]; then
  s3_env="$(mktemp)"
  s3_log="$(mktemp)"
  setsid scripts/s3.sh >"$s3_env" 2>"$s3_log" &
  s3_job=$!
  background+=("$s3_job")
fi

# Clippy runs as the workspace's compiler while the tests build (what `cargo clippy` does, but
# with code generation): the same lints on the same targets with `-D warnings`, without checking
# every crate a second time. `cargo clippy --workspace --all-targets -- -D warnings` is the
# same check on its own.
export RUSTC_WORKSPACE_WRAPPER="${RUSTC_WORKSPACE_WRAPPER:-$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)}"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

# The API document is checked against the server by schemathesis (from PyPI), kept in a
# virtualenv outside the clone so later runs reuse it.
venv="${NIGHTJAR_VENV:-/var/tmp/nightjar-venv}"
if [ ! -x "$venv/bin/st" ]; then
  echo "== installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'schemathesis==4.32.*'
fi
export NIGHTJAR_SCHEMATHESIS="$venv/bin/st"

# The calls' relay tests use a loopback coturn (Debian's package): started here when installed
# and not configured already; without it those tests say they were skipped.
if [ -z "${NIGHTJAR_TEST_TURN_URL:-}" ] && command -v turnserver >/dev/null 2>&1; then
  echo "== coturn on 127.0.0.1:3478"
  # An assignment, so that a failed start stops the run (set -e) instead of skipping tests.
  turn_env="$(scripts/coturn.sh)"
  eval "$turn_env"
fi

echo "== cargo clippy, and the tests' build"
cargo test --workspace --all-targets --no-run

# The web app (wasm32: nightjar-core and nightjar-machine with it) builds while the tests run,
# which leave a core idle some of the time; in a target directory of its own, without clippy
# (it linted above).
web_log="$(mktemp)"
setsid env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS CARGO_TARGET_DIR="$target_dir/web" \
  scripts/build-web.sh >"$web_log" 2>&1 &
web_build=$!
background+=("$web_build")

if [ -n "${s3_job:-}" ]; then
  echo "== s3s-fs (S3 for the attachment tests) on 127.0.0.1:9010"
  if ! wait "$s3_job"; then
    cat "$s3_log" >&2
    echo "the S3 server for the tests did not start" >&2
    exit 1
  fi
  eval "$(cat "$s3_env")"
  rm -f "$s3_env" "$s3_log"
fi

# cargo-nextest, where installed, runs every test in a process of its own and keeps both cores
# busy across test binaries (cargo test runs the binaries one after another); the doctests
# are cargo test's alone.
if cargo nextest --version >/dev/null 2>&1; then
  echo "== cargo nextest run"
  cargo nextest run --workspace --no-fail-fast
  echo "== cargo test --doc"
  cargo test --workspace --doc
else
  echo "== cargo test"
  cargo test --workspace
fi

echo "== web app: build, then browser tests (Playwright driving the system's Chromium)"
if ! wait "$web_build"; then
  cat "$web_log"
  echo "the web app did not build" >&2
  exit 1
fi
tail -n 3 "$web_log"
rm -f "$web_log"
# The command-line binary the tests' build made (a separate `cargo build -p nightjar-cli`
# would build again with other features).
NIGHTJAR_BIN="$target_dir/debug/nightjar" scripts/test-web.sh

echo "== all checks passed"
