#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit/property/simulation tests, the adversarial
# suites, the API document checked against the server (schemathesis), the wasm32 build of
# the core engine, and the web app in a real browser. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's heading says when it started, in minutes and seconds since the run began.
step() { printf '== [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

# Background jobs (the S3 server's first build, the schemathesis install, the web app's build)
# start now and run beside the workspace's build at a lower priority, taking the CPU it leaves
# idle (linking, the long single crates at its end). Each runs in a session of its own, so that a
# failing step stops it with the script instead of leaving it orphaned and holding its target
# directory's lock. A new session is a scheduling group of its own on Linux, so the group's
# priority is lowered too.
background=()
stop_background() {
  for pid in "${background[@]}"; do
    kill -- "-$pid" 2>/dev/null || true
  done
}
trap stop_background EXIT
beside() {
  local log="$1"
  shift
  # The group's priority is set from inside the new session: written from here, it could reach
  # this script's own group before the child has left it.
  setsid bash -c 'echo 10 >/proc/self/autogroup 2>/dev/null; exec nice -n 10 "$@"' _ "$@" \
    >"$log" 2>&1 &
  background+=("$!")
}
target_dir="$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)"

# The attachment store's tests also run against an S3-compatible server on loopback (s3s-fs,
# built from crates.io into /var/tmp/nightjar-tools the first time), started after the build
# unless configured already.
if [ -z "${NIGHTJAR_TEST_S3_ENDPOINT:-}" ]; then
  s3_log="$(mktemp)"
  beside "$s3_log" scripts/s3.sh --build-only
  s3_build="${background[-1]}"
fi

# The web app (wasm32: nightjar-core and nightjar-machine with it), in a target directory of its
# own and without clippy (the workspace's build lints the same code).
web_log="$(mktemp)"
beside "$web_log" env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
  CARGO_TARGET_DIR="$target_dir/web" scripts/build-web.sh
web_build="${background[-1]}"

# Clippy runs as the workspace's compiler while the tests build (what `cargo clippy` does, but
# with code generation): the same lints on the same targets with `-D warnings`, without checking
# every crate a second time. `cargo clippy --workspace --all-targets -- -D warnings` is the
# same check on its own.
export RUSTC_WORKSPACE_WRAPPER="${RUSTC_WORKSPACE_WRAPPER:-$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)}"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

# The API document is checked against the server by schemathesis (from PyPI), kept in a
# virtualenv outside the clone so later runs reuse it; installed beside the build the first time.
venv="${NIGHTJAR_VENV:-/var/tmp/nightjar-venv}"
if [ ! -x "$venv/bin/st" ]; then
  step "installing schemathesis into $venv (beside the build)"
  venv_log="$(mktemp)"
  beside "$venv_log" bash -c \
    'python3 -m venv "$1" && "$1/bin/pip" install --quiet "schemathesis==4.32.*"' _ "$venv"
  venv_job="${background[-1]}"
fi
export NIGHTJAR_SCHEMATHESIS="$venv/bin/st"

# The calls' relay tests use a loopback coturn (Debian's package): started here when installed
# and not configured already; without it those tests say they were skipped.
if [ -z "${NIGHTJAR_TEST_TURN_URL:-}" ] && command -v turnserver >/dev/null 2>&1; then
  step "coturn on 127.0.0.1:3478"
  # An assignment, so that a failed start stops the run (set -e) instead of skipping tests.
  turn_env="$(scripts/coturn.sh)"
  eval "$turn_env"
fi

step "cargo clippy, and the tests' build"
cargo test --workspace --all-targets --no-run
# The build is done: what still runs beside it goes on at the normal priority, level with the
# tests (where raising a priority back is not allowed, it stays low).
for pid in "${background[@]}"; do
  echo 0 >"/proc/$pid/autogroup" 2>/dev/null || true
  renice -n 0 -g "$pid" >/dev/null 2>&1 || true
done

if [ -n "${s3_build:-}" ]; then
  step "s3s-fs (S3 for the attachment tests) on 127.0.0.1:9010"
  if ! wait "$s3_build"; then
    cat "$s3_log" >&2
    echo "s3s-fs did not build" >&2
    exit 1
  fi
  rm -f "$s3_log"
  # An assignment, so that a failed start stops the run (set -e) instead of skipping tests.
  s3_env="$(scripts/s3.sh)"
  eval "$s3_env"
fi

if [ -n "${venv_job:-}" ]; then
  if ! wait "$venv_job"; then
    cat "$venv_log" >&2
    echo "schemathesis did not install" >&2
    exit 1
  fi
  rm -f "$venv_log"
fi

# cargo-nextest, where installed, runs every test in a process of its own and keeps both cores
# busy across test binaries (cargo test runs the binaries one after another); the doctests
# are cargo test's alone.
if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run"
  cargo nextest run --workspace --no-fail-fast
  step "cargo test --doc"
  cargo test --workspace --doc
else
  step "cargo test"
  cargo test --workspace
fi

step "web app: build, then browser tests (Playwright driving the system's Chromium)"
if ! wait "$web_build"; then
  cat "$web_log"
  echo "the web app did not build" >&2
  exit 1
fi
tail -n 3 "$web_log"
step "browser tests"
rm -f "$web_log"
# The command-line binary the tests' build made (a separate `cargo build -p nightjar-cli`
# would build again with other features).
NIGHTJAR_BIN="$target_dir/debug/nightjar" scripts/test-web.sh

step "all checks passed"
