//! Upgrade and rollback against a real Postgres, with rows in the tables: the
//! partitioning migration keeps every audit row (and its append-only
//! guarantee), and rolling back the last four migrations keeps them too.

use migration::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use test_db::TestDatabase;

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .expect("query")
        .expect("a row")
        .try_get("", "n")
        .expect("n")
}

#[tokio::test]
async fn partitioning_keeps_every_audit_row_and_a_rollback_keeps_them_too() {
    let database = TestDatabase::create_empty().await;
    let db = Database::connect(database.url.as_str())
        .await
        .expect("connect");

    // The schema of the release before the partitioning migration.
    let before = Migrator::migrations()
        .iter()
        .position(|m| m.name() == "m20261206_000003_audit_partitions")
        .expect("the partitioning migration");
    Migrator::up(&db, Some(u32::try_from(before).expect("few migrations")))
        .await
        .expect("migrate to the previous release");
    db.execute_unprepared(
        "INSERT INTO audit_log (audit_id, at, tenant, user_id, action, chat_id, job_id, outcome, \
                                request_id, trace_id, detail) \
         SELECT gen_random_uuid(), now() - (i % 5) * interval '1 day', 't', 'u', 'read', 'c', '', \
                'OK', '', '', '' FROM generate_series(1, 500) AS i",
    )
    .await
    .expect("rows of the previous release");

    Migrator::up(&db, None).await.expect("upgrade");
    assert_eq!(count(&db, "SELECT count(*) AS n FROM audit_log").await, 500);
    let days = count(
        &db,
        "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'audit_log'::regclass",
    )
    .await;
    assert!(
        days >= 5 + 3,
        "five days of rows, today and the days ahead, and the default: {days}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) AS n FROM audit_log_default").await,
        0,
        "every copied row is in its day"
    );
    let delete = db.execute_unprepared("DELETE FROM audit_log").await;
    assert!(delete.is_err(), "still append-only after the upgrade");

    let since = Migrator::migrations().len() - before;
    Migrator::down(&db, Some(u32::try_from(since).expect("few migrations")))
        .await
        .expect("roll back to the release before partitioning");
    assert_eq!(count(&db, "SELECT count(*) AS n FROM audit_log").await, 500);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'audit_log'::regclass",
        )
        .await,
        0,
        "unpartitioned again"
    );
    let delete = db.execute_unprepared("DELETE FROM audit_log").await;
    assert!(delete.is_err(), "still append-only after the rollback");
    Migrator::up(&db, None).await.expect("and up again");
    assert_eq!(count(&db, "SELECT count(*) AS n FROM audit_log").await, 500);

    db.close().await.expect("close");
    database.drop_now().await;
}

/// Runs `chat-memory-migrate <args>` against `url`; its stdout.
fn migrate(url: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat-memory-migrate"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .output()
        .expect("run chat-memory-migrate");
    assert!(
        output.status.success(),
        "chat-memory-migrate {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The release rollback of runbooks/maintenance.md with the shipped command:
/// `down --steps N` undoes the last N migrations (rows kept), `status` shows
/// them pending, and `up` applies them again.
#[tokio::test]
async fn the_migrate_command_rolls_a_release_back_and_forward_with_rows_kept() {
    let database = TestDatabase::create_empty().await;
    let url = database.url.clone();
    let up = migrate(&url, &["up"]);
    assert!(
        up.contains("m20261207_000002_commit_answers_for_the_cache: applied"),
        "{up}"
    );
    let db = Database::connect(url.as_str()).await.expect("connect");
    db.execute_unprepared(
        "INSERT INTO jobs (job_id, chat_id, stream_seq, state, attempts, message_count, \
                           accepted_at, updated_at) \
         SELECT gen_random_uuid(), 't/c' || i, i, 'succeeded', 1, 1, now(), now() \
           FROM generate_series(1, 100) AS i",
    )
    .await
    .expect("rows");

    let coarse_claims = "SELECT count(*) AS n FROM pg_proc \
                         WHERE proname = 'chat_memory_claim' AND prosrc LIKE '%60 seconds%'";
    assert_eq!(count(&db, coarse_claims).await, 1);
    let carried_audit = "SELECT count(*) AS n FROM pg_proc \
                         WHERE proname = 'chat_memory_begin_jobs' AND prosrc LIKE '%carried_new%'";
    assert_eq!(count(&db, carried_audit).await, 1);
    let batch_commit = "SELECT count(*) AS n FROM pg_proc \
                        WHERE proname = 'chat_memory_commit_jobs_batch'";
    assert_eq!(count(&db, batch_commit).await, 1);
    let viewed_commits = "SELECT count(*) AS n FROM pg_proc \
                          WHERE proname LIKE 'chat_memory_commit_jobs%_viewed'";
    assert_eq!(count(&db, viewed_commits).await, 2);
    let key_reuse = "SELECT count(*) AS n FROM pg_proc \
                     WHERE proname = 'chat_memory_begin_jobs' AND prosrc LIKE '%key_reused%'";
    assert_eq!(count(&db, key_reuse).await, 1);
    let down = migrate(&url, &["down", "--steps", "10"]);
    assert!(
        down.contains("m20261207_000003_key_reuse_at_begin: rolled back"),
        "{down}"
    );
    assert_eq!(
        count(&db, key_reuse).await,
        0,
        "BeginJobs without the digest"
    );
    assert!(
        down.contains("m20261207_000002_commit_answers_for_the_cache: rolled back"),
        "{down}"
    );
    assert_eq!(count(&db, viewed_commits).await, 0, "no viewed commits");
    assert!(
        down.contains("m20261207_000001_batched_commit: rolled back"),
        "{down}"
    );
    assert_eq!(count(&db, batch_commit).await, 0, "no batched commit");
    assert!(
        down.contains("m20261206_000009_accept_audit_with_job: rolled back"),
        "{down}"
    );
    assert_eq!(
        count(&db, carried_audit).await,
        0,
        "BeginJobs without the carried row is back"
    );
    assert!(
        down.contains("m20261206_000008_coarse_owner_activity: rolled back"),
        "{down}"
    );
    assert_eq!(count(&db, coarse_claims).await, 0, "the old claim is back");
    assert!(
        down.contains("m20261206_000007_batched_begin: rolled back"),
        "{down}"
    );
    assert!(
        down.contains("m20261206_000006_batched_acceptance: rolled back"),
        "{down}"
    );
    assert!(
        down.contains("m20261206_000005_fewer_job_statements: rolled back"),
        "{down}"
    );
    assert!(
        down.contains("m20261206_000004_jobs_hot_updates: rolled back"),
        "{down}"
    );
    assert!(
        down.contains("m20261206_000003_audit_partitions: rolled back"),
        "{down}"
    );
    let status = migrate(&url, &["status"]);
    assert_eq!(status.matches("Pending").count(), 10, "{status}");
    assert_eq!(count(&db, "SELECT count(*) AS n FROM jobs").await, 100);

    let again = migrate(&url, &["up"]);
    assert_eq!(again.matches(": applied").count(), 10, "{again}");
    assert_eq!(count(&db, key_reuse).await, 1);
    assert_eq!(count(&db, batch_commit).await, 1);
    assert_eq!(count(&db, viewed_commits).await, 2);
    assert_eq!(count(&db, coarse_claims).await, 1);
    assert_eq!(count(&db, carried_audit).await, 1);
    assert_eq!(count(&db, "SELECT count(*) AS n FROM jobs").await, 100);
    db.close().await.expect("close");
    database.drop_now().await;
}
