#!/usr/bin/env bash
# Makes sure PostgreSQL and NATS (with JetStream) are running on this machine.
# Starts them if they are installed but down; installs them from Debian's packages
# (postgresql, nats-server) if they are absent. With --with-prometheus it also
# installs Prometheus's binaries, which only the tests need (alert-rule tests and
# the observability test's real scrape). Idempotent: safe to run any time.
#
#   scripts/services.sh                      # what running the service needs
#   scripts/services.sh --with-prometheus    # what the tests need (scripts/test.sh)
#
# Postgres must accept user `postgres` on 127.0.0.1:5432 without a password (the
# tests' and the local run's default); on a fresh install this script adds a
# pg_hba.conf `trust` line for that user on 127.0.0.1 only.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
APT_UPDATED=0

log() { echo "[services] $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 100); do
    if port_open "$port"; then return 0; fi
    sleep 0.2
  done
  log "$what did not come up on 127.0.0.1:$port"; return 1
}

apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if port_open 5432; then log "PostgreSQL is up on 127.0.0.1:5432"; return; fi
  local fresh=0
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    log "installing PostgreSQL from Debian's packages"
    apt_install postgresql
    fresh=1
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if [ "$fresh" -eq 1 ] && ! $SUDO grep -q "chat-memory" "$hba"; then
    # Local development only: the postgres user over loopback TCP without a password.
    $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust # chat-memory local dev' "$hba"
  fi
  log "starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 PostgreSQL
}

ensure_nats() {
  if port_open 4222; then log "NATS is up on 127.0.0.1:4222"; return; fi
  if [ ! -x /usr/sbin/nats-server ]; then
    log "installing nats-server from Debian's packages"
    apt_install nats-server
  fi
  $SUDO mkdir -p /var/lib/nats-server
  log "starting nats-server with JetStream"
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 NATS
}

ensure_prometheus() {
  # promtool tests the alert rules; the observability test scrapes the stack with a real Prometheus.
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then return; fi
  log "installing Prometheus (promtool) from Debian's packages"
  apt_install prometheus
  # The package may start a system Prometheus on :9090; the tests run their own.
}

ensure_postgres
ensure_nats
if [ "${1:-}" = "--with-prometheus" ]; then
  ensure_prometheus
fi
