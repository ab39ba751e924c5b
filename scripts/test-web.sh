#!/usr/bin/env bash
# Browser tests of the web app (web/tests): a real `nightjar server` serving web/dist, and
# Debian's Chromium driven by playwright-core from npm. No browser is ever downloaded: the
# system's /usr/bin/chromium is required (Debian package `chromium`; .ci/run installs it).
# Expects a built web/dist (scripts/build-web.sh); builds the debug `nightjar` binary unless
# NIGHTJAR_BIN names one. Screenshots land in web/tests/screenshots.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "browser tests need Chromium: apt-get install chromium" >&2
  exit 1
fi
if [ -z "${NIGHTJAR_BIN:-}" ]; then
  cargo build -p nightjar-cli
fi
# The call tests relay through a loopback coturn when one can be started (Debian's package).
if [ -z "${NIGHTJAR_TEST_TURN_URL:-}" ] && command -v turnserver >/dev/null 2>&1; then
  eval "$(scripts/coturn.sh)"
fi
cd web/tests
if [ ! -d node_modules/playwright-core ]; then
  npm install --no-audit --no-fund
fi
# Two test files at a time (each test has its own server and browser context): about half the
# wall time of one at a time on two cores. NIGHTJAR_BROWSER_JOBS=1 runs them one by one.
node --test --test-concurrency="${NIGHTJAR_BROWSER_JOBS:-2}" .
