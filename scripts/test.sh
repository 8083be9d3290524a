#!/usr/bin/env bash
# Runs the whole test suite against real PostgreSQL and NATS (started or
# installed first if needed). Extra arguments go to the test runner.
#
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
