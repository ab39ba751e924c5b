#!/usr/bin/env bash
# Builds the web app and runs the server on the embedded SQLite store (data in ./nightjar-data),
# serving the app at http://127.0.0.1:8080/ (it prints the URL). Extra arguments go to
# `nightjar server`, e.g. `scripts/serve.sh --listen 0.0.0.0:8080` behind a TLS proxy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-web.sh
exec cargo run --release -p nightjar-cli -- server --web-dir web/dist "$@"
