#!/usr/bin/env bash
# Starts a coturn TURN relay for the tests (and for trying calls on one machine) unless one is
# already listening on 127.0.0.1:3478, then prints the variables the tests read:
#   eval "$(scripts/coturn.sh)"
# It listens on loopback only (UDP and TCP, no TLS), checks the short-lived credentials the
# Nightjar server hands out (`use-auth-secret`) against a secret generated once under
# /var/tmp/nightjar-turn, and relays to loopback peers, which a production relay must refuse
# (docs/calls.md has the production settings). Safe to run again: a running relay is reused.
set -euo pipefail

dir="${NIGHTJAR_TURN_DIR:-/var/tmp/nightjar-turn}"
port=3478
url="turn:127.0.0.1:$port"

if ! command -v turnserver >/dev/null 2>&1; then
  echo "coturn is not installed: apt-get install -y --no-install-recommends coturn" >&2
  exit 1
fi

mkdir -p "$dir"
chmod 700 "$dir"
# The shared secret: letters and digits only, so it reads the same in coturn's config file.
if [ ! -s "$dir/secret" ]; then
  (
    umask 077
    head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 48 >"$dir/secret.new"
    mv "$dir/secret.new" "$dir/secret"
  )
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
ours() { [ -s "$dir/turnserver.pid" ] && kill -0 "$(cat "$dir/turnserver.pid")" 2>/dev/null; }

if listening; then
  if ! ours; then
    echo "coturn.sh: something else listens on 127.0.0.1:$port; assuming it is a coturn" \
      "using $dir/secret" >&2
  fi
else
  (
    umask 077
    cat >"$dir/turnserver.conf" <<EOF
# Written by scripts/coturn.sh: a loopback relay for tests. Not a production configuration.
listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port=$port
realm=nightjar.test
use-auth-secret
static-auth-secret=$(cat "$dir/secret")
no-tls
no-dtls
no-cli
no-multicast-peers
# coturn refuses loopback peers by default; tests on one machine relay between loopback ports.
allow-loopback-peers
allowed-peer-ip=127.0.0.1
user-quota=20
total-quota=200
log-file=$dir/turnserver.log
simple-log
no-stdout-log
pidfile=$dir/turnserver.pid
EOF
  )
  rm -f "$dir/turnserver.pid"
  turnserver -c "$dir/turnserver.conf" --daemon >/dev/null
  for _ in $(seq 50); do
    listening && break
    sleep 0.2
  done
  if ! listening; then
    echo "coturn.sh: coturn did not start listening on 127.0.0.1:$port; see $dir/turnserver.log" >&2
    exit 1
  fi
fi

printf 'export NIGHTJAR_TEST_TURN_URL=%q\n' "$url"
printf 'export NIGHTJAR_TEST_TURN_SECRET_FILE=%q\n' "$dir/secret"
