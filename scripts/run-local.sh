#!/usr/bin/env bash
# Runs the whole chat-memory service on this machine:
#   1. starts (or installs) PostgreSQL and NATS,
#   2. builds the services (release profile; the first build takes a while),
#   3. creates and migrates the database,
#   4. starts memory-store, summarizer-agent, summarizer-worker, gateway and the MCP front
#      (chat-memory-mcp),
#   5. prints where they listen, and stops them all on Ctrl-C.
#
#   scripts/run-local.sh            # PROFILE=debug for a faster first build
#
# RATE_LIMIT_PER_MINUTE overrides the per-user limit (default 100; raise it for benchmarks)
# and, when set, the per-tenant budget of admin/service tokens too (the dev token is one).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
STATE=.local
LOGS=$STATE/logs
DATABASE_URL=${CHAT_MEMORY__DATABASE__URL:-postgres://postgres@127.0.0.1:5432/chat_memory?sslmode=disable}
mkdir -p "$LOGS"

scripts/services.sh

flag=""
if [ "$PROFILE" = "release" ]; then flag="--release"; fi
echo "[run-local] building ($PROFILE)..." >&2
cargo build $flag --bins --workspace
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE

"$BIN/chat-memory-migrate" --database-url "$DATABASE_URL" up

# Local secrets, made once and kept in .local/ (never committed): the gateway's
# HS256 key for bearer tokens and the service token between internal services.
SECRETS=$STATE/secrets.env
if [ ! -f "$SECRETS" ]; then
  (umask 077; {
    echo "HS256_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "SERVICE_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  } > "$SECRETS")
fi
# shellcheck disable=SC1090
. "$SECRETS"

pids=()
cleanup() {
  echo "[run-local] stopping services" >&2
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# start NAME PORT [VAR=VALUE ...]: each service gets only its own settings (unknown
# settings are rejected at start, so a typo never goes unnoticed).
start() {
  local name=$1 port=$2
  shift 2
  # Every service shares this machine's cores: one tokio thread each costs less
  # CPU per request than one per core in every process (docs/configuration.md, [runtime]).
  env CHAT_MEMORY__RUNTIME__WORKER_THREADS="${CHAT_MEMORY__RUNTIME__WORKER_THREADS:-1}" "$@" "$BIN/$name" >"$LOGS/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do
    if port_open "$port"; then return 0; fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      echo "[run-local] $name exited; last log lines:" >&2; tail -n 5 "$LOGS/$name.log" >&2; exit 1
    fi
    sleep 0.2
  done
  echo "[run-local] $name did not listen on $port" >&2; exit 1
}

start memory-store 50052 CHAT_MEMORY__DATABASE__URL="$DATABASE_URL" CHAT_MEMORY__SERVICE_TOKEN="$SERVICE_TOKEN"
start summarizer-agent 50053 CHAT_MEMORY__SERVICE_TOKEN="$SERVICE_TOKEN"
start summarizer-worker 50054 CHAT_MEMORY__STORE__SERVICE_TOKEN="$SERVICE_TOKEN" CHAT_MEMORY__AGENT__SERVICE_TOKEN="$SERVICE_TOKEN"
# CHAT_MEMORY_TLS=1: the gateway serves TLS with a certificate for localhost signed by
# a local CA (made once in .local/tls/ by scripts/local-tls.sh); clients trust the CA
# with --ca-cert .local/tls/ca.crt.
GATEWAY_TLS=()
GATEWAY_URL=http://127.0.0.1:50051
CA_HINT=""
if [ "${CHAT_MEMORY_TLS:-0}" = 1 ]; then
  # Earlier versions made one self-signed CA:TRUE certificate here, which rustls
  # clients (chat-memory) refuse as a server certificate: replace it.
  if [ -f "$STATE/tls.crt" ]; then
    echo "[run-local] replacing the old self-signed $STATE/tls.crt with a local CA in $STATE/tls/" >&2
    rm -f "$STATE/tls.crt" "$STATE/tls.key"
  fi
  scripts/local-tls.sh "$STATE/tls"
  GATEWAY_TLS=(CHAT_MEMORY__TLS__CERT_PATH="$STATE/tls/gateway.crt" CHAT_MEMORY__TLS__KEY_PATH="$STATE/tls/gateway.key")
  GATEWAY_URL=https://localhost:50051
  CA_HINT=" CHAT_MEMORY_CA_CERT=$STATE/tls/ca.crt"
fi
start gateway 50051 CHAT_MEMORY__STORE__SERVICE_TOKEN="$SERVICE_TOKEN" CHAT_MEMORY__AUTH__HS256_SECRET="$HS256_SECRET" \
  CHAT_MEMORY__RATE_LIMIT__PER_MINUTE="${RATE_LIMIT_PER_MINUTE:-100}" \
  CHAT_MEMORY__RATE_LIMIT__PER_TENANT_PER_MINUTE="${RATE_LIMIT_PER_MINUTE:-6000}" "${GATEWAY_TLS[@]}"

# The MCP front: MCP tools over streamable HTTP, calling the gateway with each caller's token.
MCP_GATEWAY=(CHAT_MEMORY__GATEWAY__URL="$GATEWAY_URL")
if [ "${CHAT_MEMORY_TLS:-0}" = 1 ]; then MCP_GATEWAY+=(CHAT_MEMORY__GATEWAY__CA_PATH="$STATE/tls/ca.crt"); fi
start chat-memory-mcp 50055 "${MCP_GATEWAY[@]}"

# A token for tenant "demo", user "dev", valid 12 hours, for the CLI, MCP and benchmarks.
"$BIN/chat-memory" token --secret "$HS256_SECRET" --tenant demo --user dev \
  --scopes memory:read,memory:write,memory:admin --ttl-secs 43200 > "$STATE/token"

cat <<TXT
chat-memory is running ($PROFILE build); logs in $LOGS/
  gateway (public gRPC API, reflection)   $GATEWAY_URL
  memory-store (internal gRPC)            127.0.0.1:50052
  summarizer-agent (MCP at /mcp, health)  127.0.0.1:50053
  summarizer-worker (health)              127.0.0.1:50054
  chat-memory-mcp (MCP tools for agents)  http://127.0.0.1:50055/mcp  (Authorization: Bearer \$(cat $STATE/token))
  metrics (Prometheus)                    127.0.0.1:9101-9105 /metrics
Try:  export CHAT_MEMORY_TOKEN=\$(cat $STATE/token) CHAT_MEMORY_GATEWAY=$GATEWAY_URL${CA_HINT}
      $BIN/chat-memory update --chat demo -m "user:My member ID is W123456789" --wait
      $BIN/chat-memory get demo
Press Ctrl-C to stop.
TXT
wait
