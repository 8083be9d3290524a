#!/usr/bin/env bash
# Runs the whole test suite against real PostgreSQL and NATS (started or
# installed first if needed). Extra arguments go to the test runner.
#
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh --with-prometheus

echo "[test] alert rules: promtool test rules monitoring/alerts.test.yml" >&2
promtool check rules monitoring/alerts.yml >/dev/null
# docker-compose.yml's observability profile: its Prometheus configuration, rules included.
promtool check config monitoring/prometheus.yml >/dev/null
promtool test rules monitoring/alerts.test.yml

# The Kubernetes manifests render (when kubectl is here; the settings files they
# share with docker-compose.yml are checked by a test either way).
if command -v kubectl >/dev/null 2>&1; then
  echo "[test] kubectl kustomize k8s/" >&2
  kubectl kustomize k8s/ >/dev/null
fi

# Some tests run the services as real processes (one trace across processes, SIGKILL,
# a real Prometheus scrape): build the binaries first.
# `fault-injection`: the agent's test-only `[faults]` (the fault suite below); the
# tests are built with the same features so nothing is compiled twice.
FEATURES=(--features summarizer-agent/fault-injection)
cargo build --workspace --bins "${FEATURES[@]}"

# The short form of the fault-injection suite (docs/reliability.md): the real
# binaries under agent faults, worker SIGKILLs (8: in the middle of a
# coalesced batch, against the stand-in model), a memory-store kill, a NATS
# restart (5: a private server of the scenario's own) and a gateway kill; about
# 35 s here. Scenario 6 (restarting this machine's Postgres) is left to manual runs.
echo "[test] fault-injection suite, short form" >&2
"${CARGO_TARGET_DIR:-target}/debug/chat-memory-bench" faults \
  --updates 100 --chats 10 --scenarios 1,3,4,5,7,8 --agent-outage-secs 5 --rate 40

# The readiness checklist's short form (docs/readiness.md records the full
# form): a stand-in model failing 10 % of calls, a real Prometheus with the
# alert rules, memory-store killed to fire ChatMemoryApiErrorRate; fails on any
# correctness criterion (latency rows are reported, not gated here).
echo "[test] readiness checklist, short form" >&2
"${CARGO_TARGET_DIR:-target}/debug/chat-memory-bench" readiness --short

# The Python client's suite and the Python examples, against a stack of their own
# (the debug binaries above, its own database and stream names).
scripts/python-tests.sh

# The test run last, so its summary closes the output.
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "${FEATURES[@]}" "$@"
else
  exec cargo test --workspace --no-fail-fast "${FEATURES[@]}" "$@"
fi
