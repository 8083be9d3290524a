#!/usr/bin/env bash
# Runs the whole test suite against real PostgreSQL and NATS (started or
# installed first if needed). Extra arguments go to the test runner.
#
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh

echo "[test] alert rules: promtool test rules monitoring/alerts.test.yml" >&2
promtool check rules monitoring/alerts.yml >/dev/null
promtool test rules monitoring/alerts.test.yml

# Some tests run the services as real processes (one trace across processes, SIGKILL,
# a real Prometheus scrape): build the binaries first.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
