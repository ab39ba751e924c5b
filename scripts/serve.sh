#!/usr/bin/env bash
# Builds the web app and runs the server on the embedded SQLite store (data in ./nightjar-data),
# serving the app at http://127.0.0.1:8080/ (it prints the URL). Extra arguments go to
# `nightjar server`, e.g. `scripts/serve.sh --listen 0.0.0.0:8080` behind a TLS proxy.
# When coturn is installed, calls can fall back to a loopback relay (scripts/coturn.sh); a
# production relay is set up as docs/calls.md says.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-web.sh
turn=()
if [ -z "${NIGHTJAR_TURN_URL:-}" ] && command -v turnserver >/dev/null 2>&1; then
  eval "$(scripts/coturn.sh)"
  turn=(--turn-url "$NIGHTJAR_TEST_TURN_URL" --turn-secret-file "$NIGHTJAR_TEST_TURN_SECRET_FILE")
fi
exec cargo run --release -p nightjar-cli -- server --web-dir web/dist "${turn[@]}" "$@"
