#!/usr/bin/env bash
# Runs the whole chat-memory service on this machine:
#   1. starts (or installs) PostgreSQL and NATS,
#   2. builds the services (release profile; the first build takes a while),
#   3. creates and migrates the database,
#   4. starts memory-store, summarizer-agent, summarizer-worker and gateway,
#   5. prints where they listen, and stops them all on Ctrl-C.
#
#   scripts/run-local.sh            # PROFILE=debug for a faster first build
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
STATE=.local
LOGS=$STATE/logs
DATABASE_URL=${CHAT_MEMORY__DATABASE__URL:-postgres://postgres@127.0.0.1:5432/chat_memory}
mkdir -p "$LOGS"

scripts/services.sh

flag=""
if [ "$PROFILE" = "release" ]; then flag="--release"; fi
echo "[run-local] building ($PROFILE)..." >&2
cargo build $flag --bins --workspace
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE

"$BIN/chat-memory-migrate" --database-url "$DATABASE_URL" up

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
  env "$@" "$BIN/$name" >"$LOGS/$name.log" 2>&1 &
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

start memory-store 50052 CHAT_MEMORY__DATABASE__URL="$DATABASE_URL"
start summarizer-agent 50053
start summarizer-worker 50054
start gateway 50051

cat <<TXT
chat-memory is running ($PROFILE build); logs in $LOGS/
  gateway (public gRPC API, reflection)   127.0.0.1:50051
  memory-store (internal gRPC)            127.0.0.1:50052
  summarizer-agent (MCP at /mcp, health)  127.0.0.1:50053
  summarizer-worker (health)              127.0.0.1:50054
Try:  $BIN/chat-memory update --chat demo -m "user:My member ID is W123456789" --wait
      $BIN/chat-memory get demo
Press Ctrl-C to stop.
TXT
wait
