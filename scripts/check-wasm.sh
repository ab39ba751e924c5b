#!/usr/bin/env bash
# Build nightjar-core and the client state machine (nightjar-machine) for wasm32-unknown-unknown (browser/Node via wasm-bindgen).
# No RUSTFLAGS are needed: crates/core/Cargo.toml turns on the JS randomness backend of every
# getrandom major in the graph (0.2 `js`, 0.3.4+ `wasm_js`, 0.4 `wasm_js`) and openmls's `js` feature.
# Extra arguments go to cargo, e.g. `scripts/check-wasm.sh --release` or `--locked`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

cargo build -p nightjar-core -p nightjar-machine --target wasm32-unknown-unknown "$@"
