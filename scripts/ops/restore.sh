#!/usr/bin/env bash
# Restores a backup made by scripts/ops/backup.sh into a deployment whose
# services are stopped (runbooks/backup-restore.md): Postgres first (every
# table, function and partition replaced by the backup's), then the JetStream
# streams (deleted and restored from their snapshots, same sequences).
#
#   CHAT_MEMORY__DATABASE__URL=postgres://... CHAT_MEMORY__NATS__URL=nats://... \
#   CHAT_MEMORY__NATS__STREAM=CHAT_MEMORY_JOBS scripts/ops/restore.sh DIR
#
# The database must exist (it may be empty). Start memory-store, the gateways
# and the workers afterwards; the workers then apply the jobs the backup held.
set -euo pipefail
DIR=${1:?usage: scripts/ops/restore.sh DIR}
DB=${CHAT_MEMORY__DATABASE__URL:?set CHAT_MEMORY__DATABASE__URL}
CLI=${CHAT_MEMORY_CLI:-chat-memory}
command -v "$CLI" >/dev/null 2>&1 || { echo "restore: $CLI not found (set CHAT_MEMORY_CLI)" >&2; exit 2; }
[ -f "$DIR/postgres.dump" ] || { echo "restore: $DIR/postgres.dump missing" >&2; exit 2; }

echo "[restore] Postgres <- $DIR/postgres.dump (taken $(cat "$DIR/taken-at" 2>/dev/null || echo '?'))" >&2
pg_restore --clean --if-exists --no-owner --exit-on-error --dbname="$DB" "$DIR/postgres.dump"
echo "[restore] JetStream streams <- $DIR/jetstream" >&2
"$CLI" streams restore --from "$DIR/jetstream" --replace
echo "[restore] done" >&2
