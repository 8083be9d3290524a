#!/usr/bin/env bash
# Backs up a chat-memory deployment into DIR: the JetStream streams first
# (jobs, dead letters, audit outbox, with their consumers, through JetStream's
# snapshot API: same sequences), then Postgres (pg_dump, custom format).
#
#   CHAT_MEMORY__DATABASE__URL=postgres://... CHAT_MEMORY__NATS__URL=nats://... \
#   CHAT_MEMORY__NATS__STREAM=CHAT_MEMORY_JOBS scripts/ops/backup.sh DIR
#
# Online: the services keep running. Streams before Postgres, so that a job
# applied while the backup runs is in both (a restore skips it: its record
# says succeeded) and never in neither. An update accepted after the stream
# snapshot is not in the backup (runbooks/backup-restore.md).
# The CLI is `chat-memory` on PATH, or CHAT_MEMORY_CLI.
set -euo pipefail
DIR=${1:?usage: scripts/ops/backup.sh DIR}
DB=${CHAT_MEMORY__DATABASE__URL:?set CHAT_MEMORY__DATABASE__URL}
CLI=${CHAT_MEMORY_CLI:-chat-memory}
command -v "$CLI" >/dev/null 2>&1 || { echo "backup: $CLI not found (set CHAT_MEMORY_CLI)" >&2; exit 2; }

mkdir -p "$DIR"
echo "[backup] JetStream streams -> $DIR/jetstream" >&2
"$CLI" streams backup --out "$DIR/jetstream"
echo "[backup] Postgres -> $DIR/postgres.dump" >&2
pg_dump --format=custom --no-owner --file="$DIR/postgres.dump" "$DB"
date -u +%Y-%m-%dT%H:%M:%SZ > "$DIR/taken-at"
echo "[backup] done: $(du -sh "$DIR" | cut -f1) in $DIR" >&2
