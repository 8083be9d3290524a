//! `--history`: the data a running deployment accumulates, written into the
//! stack's fresh database before the load (issue 13's data-growth check):
//! 1,000,000 audit rows over 30 days, 1,000,000 ended job records over 40
//! days and 100,000 memories with their owners, all of tenant `seed` (never
//! the bench's tenant), then `ANALYZE`. The same shape as
//! `scripts/explain-hot-queries.sh`. Seeded job records ended at least a day
//! ago, so the bench's own job counts (records ended since it connected)
//! never include them.

use std::time::Instant;

use sea_orm::{ConnectionTrait, Database};

/// Writes the history; prints how long it took.
///
/// # Errors
/// The database's error.
pub async fn seed(url: &str) -> Result<(), sea_orm::DbErr> {
    let started = Instant::now();
    let db = Database::connect(url).await?;
    db.execute_unprepared(
        "SELECT chat_memory_audit_partition(((now() AT TIME ZONE 'UTC')::date - d)) \
           FROM generate_series(1, 30) AS d",
    )
    .await?;
    db.execute_unprepared(
        "INSERT INTO audit_log (audit_id, at, tenant, user_id, action, chat_id, job_id, outcome, \
                                request_id, trace_id, detail) \
         SELECT gen_random_uuid(), \
                now() - (1 + i % 30) * interval '1 day' - (i % 80000) * interval '1 second', \
                'seed', 'u' || (i % 5000), (ARRAY['update','read','status'])[1 + i % 3], \
                'c' || (i % 100000), '', 'OK', '', '', '' \
           FROM generate_series(1, 1000000) AS i",
    )
    .await?;
    db.execute_unprepared(
        "INSERT INTO jobs (job_id, chat_id, stream_seq, state, attempts, message_count, \
                           accepted_at, updated_at) \
         SELECT gen_random_uuid(), 'seed/c' || (i % 100000), 1000000000 + i, \
                CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 2, \
                now() - (1 + i % 40) * interval '1 day', now() - (1 + i % 40) * interval '1 day' \
           FROM generate_series(1, 1000000) AS i",
    )
    .await?;
    db.execute_unprepared(
        "INSERT INTO memories (chat_id, user_confirmed, llm_inferred, general_summary, \
                               tokens_user_confirmed, tokens_llm_inferred, \
                               tokens_general_summary, state, version, last_job_id, \
                               last_applied_seq, created_at, updated_at) \
         SELECT 'seed/c' || i, repeat('- a fact the user stated. ', 12), \
                repeat('- an inference. ', 8), repeat('The user asked about a claim. ', 20), \
                60, 40, 100, '{}'::jsonb, 10, gen_random_uuid(), 1000000000 + i, now(), now() \
           FROM generate_series(0, 99999) AS i; \
         INSERT INTO chat_owners (chat_id, tenant, owner_user, created_at, last_activity_at) \
         SELECT chat_id, 'seed', 'u1', now(), now() FROM memories WHERE chat_id LIKE 'seed/%'",
    )
    .await?;
    // VACUUM too: otherwise autovacuum processes the new rows during the
    // measured load (insert-triggered vacuum of 1 M rows), which a long-running
    // deployment spreads over days.
    db.execute_unprepared("VACUUM (ANALYZE)").await?;
    db.close().await?;
    eprintln!(
        "  history: 1,000,000 audit rows, 1,000,000 job records, 100,000 memories seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
