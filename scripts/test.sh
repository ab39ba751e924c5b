#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit/property/simulation tests, the adversarial
# suites, the API document checked against the server (schemathesis), the wasm32 build of
# the core engine, and the web app in a real browser. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# The API document is checked against the server by schemathesis (from PyPI), kept in a
# virtualenv outside the clone so later runs reuse it.
venv="${NIGHTJAR_VENV:-/var/tmp/nightjar-venv}"
if [ ! -x "$venv/bin/st" ]; then
  echo "== installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'schemathesis==4.32.*'
fi
export NIGHTJAR_SCHEMATHESIS="$venv/bin/st"

echo "== cargo test"
cargo test --workspace

echo "== wasm32 build of nightjar-core and nightjar-machine"
scripts/check-wasm.sh

echo "== web app: build, then browser tests (Playwright driving the system's Chromium)"
scripts/build-web.sh
scripts/test-web.sh

echo "== all checks passed"
