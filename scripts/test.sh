#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit/property/simulation tests, and the
# wasm32 build of the core engine. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --workspace

echo "== wasm32 build of nightjar-core"
scripts/check-wasm.sh

echo "== all checks passed"
