#!/usr/bin/env bash
# Builds the web app into web/dist: the client (crates/web) compiled to wasm32, its JavaScript
# glue made by wasm-bindgen, and the static files. The wasm-bindgen command-line tool must be
# the version the crate is pinned to; it is installed from crates.io into a tools directory
# outside the clone (NIGHTJAR_TOOLS, default /var/tmp/nightjar-tools) and reused. Nothing is
# downloaded but crates.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tools="${NIGHTJAR_TOOLS:-/var/tmp/nightjar-tools}"
version="$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' crates/web/Cargo.toml)"
target_dir="${CARGO_TARGET_DIR:-target}"
out=web/dist

rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if ! "$tools/bin/wasm-bindgen" --version 2>/dev/null | grep -qF "$version"; then
  echo "== installing wasm-bindgen-cli $version into $tools"
  CARGO_TARGET_DIR="$tools/build" cargo install wasm-bindgen-cli --version "$version" --root "$tools"
fi

# The app, and the call media worker's SFrame module (a small wasm of its own, loaded by
# web/sframe-worker.js in each call).
cargo build -p nightjar-web -p nightjar-media --target wasm32-unknown-unknown --release
rm -rf "$out"
mkdir -p "$out"
for module in nightjar_web nightjar_media; do
  "$tools/bin/wasm-bindgen" --target web --no-typescript --out-dir "$out" \
    "$target_dir/wasm32-unknown-unknown/release/$module.wasm"
done
# binaryen's wasm-opt shrinks the module, but releases before 116 (Debian 12 has 108) break
# what wasm-bindgen emits for current rustc (its function tables): only a newer one is used.
# (No wasm-opt at all is fine: the module is just larger.)
wasm_opt_version="$( (wasm-opt --version 2>/dev/null || true) | sed -n 's/^wasm-opt version \([0-9]*\).*/\1/p')"
if [ -n "$wasm_opt_version" ] && [ "$wasm_opt_version" -ge 116 ]; then
  wasm-opt -Os --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$out/nightjar_web_bg.wasm" -o "$out/nightjar_web_bg.wasm"
  wasm-opt -Os --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$out/nightjar_media_bg.wasm" -o "$out/nightjar_media_bg.wasm"
fi
cp web/index.html web/style.css web/boot.js web/sframe-worker.js "$out/"
echo "web app built in $out ($(du -sh "$out" | cut -f1))"
