#!/usr/bin/env bash
# Seeds a scratch database with a running deployment's data (1 M audit rows over
# 30 days, 1 M job records, 100,000 memories and owners), then prints the plan
# and timing of every hot statement of memory-store (EXPLAIN ANALYZE), so index
# use can be checked at scale. The statements are the ones in
# crates/memory-store/src (and inside the plpgsql functions of migrations/),
# with literal values. Drops the database at the end.
#
#   scripts/explain-hot-queries.sh            # needs Postgres (scripts/services.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

PG=${CHAT_MEMORY_TEST_PG:-postgres://postgres@127.0.0.1:5432}
DB=cm_explain_$$
MIGRATE=${CARGO_TARGET_DIR:-target}/debug/chat-memory-migrate
[ -x "$MIGRATE" ] || cargo build -q -p chat-memory-migration
trap 'psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

"$MIGRATE" --database-url "$PG/$DB" up >/dev/null
q() { psql "$PG/$DB" -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "[explain] seeding 1,000,000 audit rows, 1,000,000 jobs, 100,000 memories" >&2
q >/dev/null <<'SQL'
SELECT chat_memory_audit_partition(((now() AT TIME ZONE 'UTC')::date - d))
  FROM generate_series(0, 30) AS d;
INSERT INTO audit_log (audit_id, at, tenant, user_id, action, chat_id, job_id, outcome,
                       request_id, trace_id, detail)
SELECT gen_random_uuid(), now() - (i % 30) * interval '1 day' - (i % 86000) * interval '1 second',
       't' || (i % 50), 'u' || (i % 5000), (ARRAY['update','read','status'])[1 + i % 3],
       'c' || (i % 100000), '', 'OK', '', '', ''
  FROM generate_series(1, 1000000) AS i;
INSERT INTO jobs (job_id, chat_id, stream_seq, state, attempts, message_count, accepted_at,
                  updated_at)
SELECT gen_random_uuid(), 't' || (i % 50) || '/c' || (i % 100000), i,
       CASE WHEN i % 1000 = 0 THEN 'queued' ELSE 'succeeded' END, 1, 2,
       now() - (i % 40) * interval '1 day', now() - (i % 40) * interval '1 day'
  FROM generate_series(1, 1000000) AS i;
INSERT INTO memories (chat_id, user_confirmed, llm_inferred, general_summary,
                      tokens_user_confirmed, tokens_llm_inferred, tokens_general_summary, state,
                      version, last_job_id, last_applied_seq, created_at, updated_at)
SELECT 't' || (i % 50) || '/c' || i, repeat('fact ', 60), repeat('guess ', 40),
       repeat('summary ', 100), 60, 40, 100, '{}'::jsonb, 10, gen_random_uuid(), 0, now(), now()
  FROM generate_series(0, 99999) AS i;
INSERT INTO chat_owners (chat_id, tenant, owner_user, created_at, last_activity_at)
SELECT chat_id, split_part(chat_id, '/', 1), 'u1', now(), now() - (random() * 40) * interval '1 day'
  FROM memories;
ANALYZE;
SQL

explain() {
  echo
  echo "### $1"
  echo
  echo '```text'
  q -c "EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) $2" | sed -e 's/[[:space:]]*$//' | grep -v '^$'
  echo '```'
}

JOB=$(q -Atc "SELECT job_id FROM jobs WHERE state = 'queued' LIMIT 1")
CHAT=$(q -Atc "SELECT chat_id FROM jobs WHERE job_id = '$JOB'")

explain "GetMemory (memory, owner, pending jobs: one statement)" "
SELECT m.chat_id, m.version, m.updated_at, o.owner_user, o.last_activity_at,
       (SELECT count(*) FROM jobs j WHERE j.chat_id = m.chat_id
           AND j.stream_seq > m.last_applied_seq
           AND j.state IN ('queued', 'running')) AS pending_jobs
  FROM memories m LEFT JOIN chat_owners o ON o.chat_id = m.chat_id
 WHERE m.chat_id = '$CHAT'"
explain "GetUpdateStatus (a job by id)" "SELECT * FROM jobs WHERE job_id = '$JOB'"
explain "BeginJobs / CommitJobs: each job of a batch, by primary key" "
SELECT j.chat_id, j.state FROM jobs j WHERE j.job_id = '$JOB'"
explain "BeginJobs / CommitJobs: the chat's tombstone" "
SELECT t.deleted_through_seq FROM chat_tombstones t WHERE t.chat_id = '$CHAT'"
explain "ClaimChat: the chat's owner" "SELECT o.owner_user FROM chat_owners o WHERE o.chat_id = '$CHAT'"
explain "CommitJobs: what GetMemory answers right after it (owner, applied sequence, pending jobs)" "
SELECT o.owner_user, o.last_activity_at, m.last_applied_seq,
       to_jsonb(ARRAY(SELECT j.stream_seq FROM jobs j
                       WHERE j.chat_id = m.chat_id AND j.stream_seq > m.last_applied_seq
                         AND j.state IN ('queued', 'running')
                       ORDER BY j.stream_seq))
  FROM memories m LEFT JOIN chat_owners o ON o.chat_id = m.chat_id
 WHERE m.chat_id = '$CHAT'"
explain "QueryAudit: a tenant's newest rows" "
SELECT * FROM audit_log WHERE tenant = 't7' ORDER BY at DESC LIMIT 100"
explain "QueryAudit: a tenant's rows of one chat before a time" "
SELECT * FROM audit_log WHERE tenant = 't7' AND chat_id = 'c7'
   AND at < now() - interval '2 days' ORDER BY at DESC LIMIT 100"
explain "Expiry: the oldest inactive owners" "
SELECT * FROM chat_owners WHERE last_activity_at < now() - interval '30 days'
 ORDER BY last_activity_at LIMIT 100"
explain "Retention: ended job records past 30 days (one batch)" "
SELECT j.job_id FROM jobs j WHERE j.accepted_at < now() - interval '30 days'
   AND j.updated_at < now() - interval '30 days' AND j.state IN ('succeeded', 'failed')
 LIMIT 5000"
explain "Expiry: a chat's last job sequence" "
SELECT max(j.stream_seq) FROM jobs j WHERE j.chat_id = '$CHAT'"
