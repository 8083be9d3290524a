#!/usr/bin/env bash
# Runs the Python client's test suite (clients/python/tests) and the Python
# examples (examples/python) against a real stack of their own:
#   - the debug binaries, already built (`cargo build --workspace --bins`),
#   - a fresh Postgres database (created, migrated, dropped at exit),
#   - their own JetStream stream, subjects, consumer and rate-limit bucket (deleted at exit),
#   - memory-store, the summarizer agent (offline backend), a worker, two gateways
#     (plaintext, and TLS with a throwaway CA) and the MCP front (chat-memory-mcp) on
#     ports outside the ephemeral range,
#   - a Python virtualenv in .local/python-tests/venv-<version> with `pip install ./clients/python pytest`,
#     on Python >= 3.10 mypy with the grpc and protobuf stubs (the client's type hints are checked first)
#     and, on Python >= 3.10, the `mcp` SDK (tests/test_mcp.py is skipped without it).
# Everything started is stopped, and everything created removed, even on failure.
#
#   scripts/python-tests.sh [pytest arguments]
#
# Needs PostgreSQL and NATS on 127.0.0.1 (scripts/services.sh) and python3.
# PY_TESTS_PORT_BASE (default 21050) moves the ports: base+1 gateway, +2 memory-store,
# +3 agent, +4 worker, +5 TLS gateway, +6 a gateway the tests restart, +7 MCP front, +51..+57 metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BIN=${CARGO_TARGET_DIR:-target}/debug
BASE=${PY_TESTS_PORT_BASE:-21050}
PG=${CHAT_MEMORY_TEST_PG:-postgres://postgres@127.0.0.1:5432}
NATS_URL=${CHAT_MEMORY_TEST_NATS:-nats://127.0.0.1:4222}
STATE=$ROOT/.local/python-tests
PYTHON=${PYTHON:-python3}   # another interpreter, e.g. PYTHON=python3.9, gets a virtualenv of its own

log() { echo "[python-tests] $*" >&2; }

for b in memory-store summarizer-agent summarizer-worker gateway chat-memory-mcp chat-memory chat-memory-migrate; do
  if [ ! -x "$BIN/$b" ]; then
    log "missing $BIN/$b: build first with 'cargo build --workspace --bins'"; exit 1
  fi
done

# python3 with venv (Debian splits venv/ensurepip into python3-venv).
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  log "installing python3 and python3-venv from Debian's packages"
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
fi

VENV=$STATE/venv-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
SUFFIX=$(date +%s)_$$
DB_NAME=chat_memory_pytest_$SUFFIX
DATABASE_URL=$PG/$DB_NAME
STREAM=PYT_$SUFFIX
RUN=$(mktemp -d "${TMPDIR:-/tmp}/chat-memory-pytests.XXXXXX")
LOGS=$STATE/logs   # kept after the run (each run replaces them)
rm -rf "$LOGS"
mkdir -p "$LOGS" "$STATE"

pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    for f in "$LOGS"/*.log; do
      [ -f "$f" ] || continue
      log "last lines of $f:"; tail -n 4 "$f" | cut -c1-400 >&2 || true
    done
  fi
  if [ -x "$VENV/bin/python" ]; then
    "$VENV/bin/python" clients/python/tests/nats_admin.py delete-streams "${NATS_URL#nats://}" "$STREAM" || true
  fi
  if command -v psql >/dev/null 2>&1; then
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1 \
      || log "could not drop database $DB_NAME"
  else
    log "psql not found: database $DB_NAME left behind"
  fi
  rm -rf "$RUN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The virtualenv is kept between runs (only pip's work is saved); the package is
# always rebuilt from the working tree, so the stubs match proto/ as it is now.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
log "pip install ./clients/python pytest"
"$VENV/bin/pip" install -q --disable-pip-version-check ./clients/python pytest
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps ./clients/python
# The Python MCP SDK, an independent client of chat-memory-mcp (tests/test_mcp.py); it needs 3.10+.
if "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  log "pip install mcp"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'mcp>=2.3,<3'
else
  log "Python < 3.10: no mcp SDK, tests/test_mcp.py will be skipped"
fi

# The client's type hints, checked before anything starts (mypy's defaults;
# grpc and protobuf through their typeshed stubs). mypy 2 runs on 3.10+ and
# checks for the interpreter it runs on; on 3.9 the suite itself is the check.
if "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  log "pip install mypy types-grpcio types-protobuf; mypy clients/python/src/chat_memory"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'mypy>=2,<3' types-grpcio types-protobuf
  (cd clients/python && "$VENV/bin/mypy" --no-error-summary src/chat_memory)
else
  log "Python < 3.10: no mypy (it needs 3.10)"
fi

log "database $DB_NAME, stream $STREAM"
"$BIN/chat-memory-migrate" --database-url "$DATABASE_URL" up >/dev/null

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# start NAME LOG PORT [VAR=VALUE ...]: each service gets only its own settings.
start() {
  local name=$1 logname=$2 port=$3
  shift 3
  if port_open "$port"; then log "port $port is taken (set PY_TESTS_PORT_BASE)"; exit 1; fi
  env NO_COLOR=1 CHAT_MEMORY__TELEMETRY__LOG_FORMAT=pretty "$@" "$BIN/$name" >"$LOGS/$logname.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do
    if port_open "$port"; then return 0; fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then log "$logname exited"; exit 1; fi
    sleep 0.2
  done
  log "$logname did not listen on $port"; exit 1
}
SERVICE_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
NATS_ENV=(CHAT_MEMORY__NATS__URL="$NATS_URL" CHAT_MEMORY__NATS__STREAM="$STREAM"
  CHAT_MEMORY__NATS__SUBJECT_PREFIX="pyt.$SUFFIX" CHAT_MEMORY__NATS__MAX_BYTES=16777216
  CHAT_MEMORY__NATS__DUPLICATE_WINDOW_SECS=120)
STORE_URL=http://127.0.0.1:$((BASE + 2))

start memory-store memory-store $((BASE + 2)) CHAT_MEMORY__LISTEN_ADDR=127.0.0.1:$((BASE + 2)) \
  CHAT_MEMORY__TELEMETRY__METRICS_ADDR=127.0.0.1:$((BASE + 52)) \
  CHAT_MEMORY__DATABASE__URL="$DATABASE_URL" CHAT_MEMORY__DATABASE__MAX_CONNECTIONS=8 \
  CHAT_MEMORY__SERVICE_TOKEN="$SERVICE_TOKEN"
start summarizer-agent summarizer-agent $((BASE + 3)) CHAT_MEMORY__LISTEN_ADDR=127.0.0.1:$((BASE + 3)) \
  CHAT_MEMORY__TELEMETRY__METRICS_ADDR=127.0.0.1:$((BASE + 53)) \
  CHAT_MEMORY__SERVICE_TOKEN="$SERVICE_TOKEN" CHAT_MEMORY__BACKEND=offline
start summarizer-worker summarizer-worker $((BASE + 4)) CHAT_MEMORY__LISTEN_ADDR=127.0.0.1:$((BASE + 4)) \
  CHAT_MEMORY__TELEMETRY__METRICS_ADDR=127.0.0.1:$((BASE + 54)) \
  CHAT_MEMORY__STORE__ENDPOINT="$STORE_URL" CHAT_MEMORY__STORE__SERVICE_TOKEN="$SERVICE_TOKEN" \
  CHAT_MEMORY__AGENT__URL=http://127.0.0.1:$((BASE + 3))/mcp CHAT_MEMORY__AGENT__SERVICE_TOKEN="$SERVICE_TOKEN" \
  CHAT_MEMORY__CONSUMER__DURABLE_PREFIX=pyt "${NATS_ENV[@]}"
# Per-user budget: small enough that the rate-limit test meets it quickly, large
# enough for every other test (each test is its own user).
GATEWAY_ENV=(CHAT_MEMORY__STORE__ENDPOINT="$STORE_URL" CHAT_MEMORY__STORE__SERVICE_TOKEN="$SERVICE_TOKEN"
  CHAT_MEMORY__AUTH__HS256_SECRET="$HS256_SECRET" CHAT_MEMORY__RATE_LIMIT__PER_MINUTE=120
  CHAT_MEMORY__RATE_LIMIT__FAILED_AUTH_PER_MINUTE_PER_IP=100000
  CHAT_MEMORY__RATE_LIMIT__BUCKET="PYT_${SUFFIX}_RL" "${NATS_ENV[@]}")
start gateway gateway $((BASE + 1)) CHAT_MEMORY__LISTEN_ADDR=127.0.0.1:$((BASE + 1)) \
  CHAT_MEMORY__TELEMETRY__METRICS_ADDR=127.0.0.1:$((BASE + 51)) "${GATEWAY_ENV[@]}"
scripts/local-tls.sh "$RUN/tls"
start gateway gateway-tls $((BASE + 5)) CHAT_MEMORY__LISTEN_ADDR=127.0.0.1:$((BASE + 5)) \
  CHAT_MEMORY__TELEMETRY__METRICS_ADDR=127.0.0.1:$((BASE + 55)) \
  CHAT_MEMORY__TLS__CERT_PATH="$RUN/tls/gateway.crt" CHAT_MEMORY__TLS__KEY_PATH="$RUN/tls/gateway.key" \
  "${GATEWAY_ENV[@]}"

# The MCP front, calling the plaintext gateway with each caller's token.
start chat-memory-mcp chat-memory-mcp $((BASE + 7)) CHAT_MEMORY__LISTEN_ADDR=127.0.0.1:$((BASE + 7)) \
  CHAT_MEMORY__TELEMETRY__METRICS_ADDR=127.0.0.1:$((BASE + 57)) \
  CHAT_MEMORY__GATEWAY__URL=http://127.0.0.1:$((BASE + 1))

export CHAT_MEMORY_TEST_GATEWAY=http://127.0.0.1:$((BASE + 1))
export CHAT_MEMORY_TEST_TLS_GATEWAY=https://localhost:$((BASE + 5))
export CHAT_MEMORY_TEST_CA_CERT=$RUN/tls/ca.crt
export CHAT_MEMORY_TEST_HS256_SECRET=$HS256_SECRET
export CHAT_MEMORY_TEST_RATE_LIMIT_PER_MINUTE=120
# What a test needs to run a gateway of its own (to kill and restart it under a watch).
case $BIN in
  /*) export CHAT_MEMORY_TEST_GATEWAY_BIN=$BIN/gateway ;;
  *) export CHAT_MEMORY_TEST_GATEWAY_BIN=$ROOT/$BIN/gateway ;;
esac
export CHAT_MEMORY_TEST_GATEWAY_ENV=$RUN/gateway.env
export CHAT_MEMORY_TEST_SPARE_PORTS="$((BASE + 6)) $((BASE + 56))"
printf '%s\n' "${GATEWAY_ENV[@]}" >"$CHAT_MEMORY_TEST_GATEWAY_ENV"

# tests/test_mcp.py: the MCP endpoint and two tenants' tokens, minted by the real CLI.
export CHAT_MEMORY_MCP_URL=http://127.0.0.1:$((BASE + 7))/mcp
CHAT_MEMORY_MCP_TOKEN=$("$BIN/chat-memory" token --secret "$HS256_SECRET" --tenant pytest-mcp \
  --user "mcp-$SUFFIX" --scopes memory:read,memory:write --ttl-secs 900)
CHAT_MEMORY_MCP_OTHER_TOKEN=$("$BIN/chat-memory" token --secret "$HS256_SECRET" --tenant pytest-mcp-other \
  --user "mcp-$SUFFIX" --scopes memory:read,memory:write --ttl-secs 900)
export CHAT_MEMORY_MCP_TOKEN CHAT_MEMORY_MCP_OTHER_TOKEN

log "pytest clients/python/tests"
(cd clients/python && "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" tests)

# The examples, as a user runs them: address and token from the environment.
EXAMPLE_TOKEN=$("$BIN/chat-memory" token --secret "$HS256_SECRET" --tenant examples --user dev \
  --scopes memory:read,memory:write --ttl-secs 600)
for example in minimal agent_loop; do
  log "examples/python/$example.py"
  CHAT_MEMORY_GATEWAY=$CHAT_MEMORY_TEST_GATEWAY CHAT_MEMORY_TOKEN=$EXAMPLE_TOKEN \
    "$VENV/bin/python" "examples/python/$example.py" >"$LOGS/example-$example.out" 2>&1 \
    || { cat "$LOGS/example-$example.out" >&2; log "examples/python/$example.py failed"; exit 1; }
  tail -n 3 "$LOGS/example-$example.out" >&2
done
log "python client tests and examples passed"
