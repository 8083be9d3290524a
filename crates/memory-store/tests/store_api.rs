//! memory-store's gRPC API against a real Postgres: one fresh database per test,
//! migrated with `migration::Migrator`, the server on port 0, a tonic client.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_memory_proto::{
    store::{
        BeginJobRequest, CommitJobRequest, CommitOutcome, DeleteChatRequest, FailJobRequest,
        GetJobRequest, GetMemoryRequest, MemoryContent, RecordAcceptedRequest, SkipReason,
        memory_store_client::MemoryStoreClient,
    },
    v1::{JobState, TokenCounts},
};
use memory_store::{Settings, StoreError, settings::DatabaseSettings};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

// ---------------------------------------------------------------- helpers

/// Postgres server URL (no database), from `CHAT_MEMORY_TEST_PG` or the local default.
fn server_url() -> String {
    let url = std::env::var("CHAT_MEMORY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    // Keep `scheme://authority`, drop any database path.
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    match url[authority_start..].find('/') {
        Some(slash) => url[..authority_start + slash].to_owned(),
        None => url,
    }
}

/// A database named `cm_store_<unix_secs>_<random>`, dropped (forcefully) on drop.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn create(migrate: bool) -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("cm_store_{secs}_{:08x}", rand::random::<u32>());
        let admin = Database::connect(format!("{}/postgres", server_url()))
            .await
            .expect("connect to postgres db");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        admin.close().await.expect("close admin");
        let url = format!("{}/{name}", server_url());
        if migrate {
            let db = Database::connect(url.as_str())
                .await
                .expect("connect to test database");
            Migrator::up(&db, None).await.expect("migrate");
            db.close().await.expect("close");
        }
        Self { name, url }
    }

    fn settings(&self) -> Settings {
        Settings {
            database: DatabaseSettings {
                url: self.url.clone(),
                max_connections: 10,
                min_connections: 1,
                connect_timeout_ms: 2000,
                acquire_timeout_ms: 2000,
            },
            ..Settings::default()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context guarantees: use a private runtime on its own thread.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = Database::connect(format!("{}/postgres", server_url()))
                    .await
                    .ok()?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let result = admin.execute_unprepared(&sql).await;
                let _ = admin.close().await;
                result.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: test database {} was not dropped", self.name);
        }
    }
}

/// memory-store running on port 0 over a fresh, migrated database.
struct TestStore {
    client: MemoryStoreClient<Channel>,
    channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), StoreError>>,
    // Last field: dropped after the server was told to stop.
    _db: TestDb,
}

impl TestStore {
    async fn start() -> Self {
        let db = TestDb::create(true).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(memory_store::run(db.settings(), listener, async {
            let _ = rx.await;
        }));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connect to memory-store");
        Self {
            client: MemoryStoreClient::new(channel.clone()),
            channel,
            shutdown: Some(tx),
            server,
            _db: db,
        }
    }

    /// Stops the server and returns what `run` returned.
    async fn stop(mut self) -> Result<(), StoreError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let server = &mut self.server;
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("run returns after shutdown")
            .expect("run task")
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn accepted(job: &str, chat: &str, seq: u64) -> RecordAcceptedRequest {
    RecordAcceptedRequest {
        job_id: job.into(),
        chat_id: chat.into(),
        stream_seq: seq,
        message_count: 3,
        idempotency_key: String::new(),
        accepted_at: None,
    }
}

fn begin(job: &str, chat: &str, seq: u64) -> BeginJobRequest {
    BeginJobRequest {
        access: None,
        job_id: job.into(),
        chat_id: chat.into(),
        stream_seq: seq,
        attempt: 1,
        message_count: 3,
        accepted_at: None,
        replay: false,
    }
}

fn content(summary: &str) -> MemoryContent {
    MemoryContent {
        user_confirmed: "likes tea".into(),
        llm_inferred: "probably British".into(),
        general_summary: summary.into(),
        token_counts: Some(TokenCounts {
            user_confirmed: 2,
            llm_inferred: 3,
            general_summary: 5,
            total: 0,
        }),
        state_json: r#"{"items":[1,2]}"#.into(),
    }
}

fn commit(
    job: &str,
    chat: &str,
    seq: u64,
    expected_version: i64,
    summary: &str,
) -> CommitJobRequest {
    CommitJobRequest {
        job_id: job.into(),
        chat_id: chat.into(),
        stream_seq: seq,
        expected_version,
        content: Some(content(summary)),
        attempt: 1,
    }
}

fn outcome(r: &chat_memory_proto::store::CommitJobResponse) -> CommitOutcome {
    CommitOutcome::try_from(r.outcome).unwrap_or(CommitOutcome::Unspecified)
}

fn skip(r: &chat_memory_proto::store::BeginJobResponse) -> SkipReason {
    SkipReason::try_from(r.skip).unwrap_or(SkipReason::Unspecified)
}

impl TestStore {
    /// Begins and commits `job` on top of the current memory; returns the commit response.
    async fn apply(
        &mut self,
        job: &str,
        chat: &str,
        seq: u64,
        summary: &str,
    ) -> chat_memory_proto::store::CommitJobResponse {
        let begun = self
            .client
            .begin_job(begin(job, chat, seq))
            .await
            .expect("begin")
            .into_inner();
        assert_eq!(
            skip(&begun),
            SkipReason::Unspecified,
            "{job} must be applied"
        );
        let request = commit(job, chat, seq, begun.prior_version, summary);
        self.client
            .commit_job(request)
            .await
            .expect("commit")
            .into_inner()
    }

    async fn version(&mut self, chat: &str) -> i64 {
        let response = self
            .client
            .get_memory(GetMemoryRequest {
                access: None,
                chat_id: chat.into(),
            })
            .await
            .expect("get memory");
        response.into_inner().memory.map_or(-1, |m| m.version)
    }

    async fn job_state(&mut self, job: &str) -> (JobState, String) {
        let job = self
            .client
            .get_job(GetJobRequest {
                access: None,
                job_id: job.into(),
            })
            .await
            .expect("get job")
            .into_inner();
        (
            JobState::try_from(job.state).unwrap_or(JobState::Unspecified),
            job.error,
        )
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn a_commit_is_visible_through_get_memory_with_version_one_and_pending_counts() {
    let mut store = TestStore::start().await;
    let (first, second) = (job_id(), job_id());
    for (job, seq) in [(&first, 1), (&second, 2)] {
        let r = store
            .client
            .record_accepted(accepted(job, "chat-a", seq))
            .await
            .expect("record")
            .into_inner();
        assert!(r.inserted);
    }

    let begun = store
        .client
        .begin_job(begin(&first, "chat-a", 1))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(skip(&begun), SkipReason::Unspecified);
    assert_eq!((begun.prior, begun.prior_version), (None, 0));
    assert_eq!(store.job_state(&first).await.0, JobState::Running);
    let committed = store
        .client
        .commit_job(commit(&first, "chat-a", 1, 0, "hello"))
        .await
        .expect("commit")
        .into_inner();

    assert_eq!(
        (outcome(&committed), committed.version),
        (CommitOutcome::Applied, 1)
    );
    let got = store
        .client
        .get_memory(GetMemoryRequest {
            access: None,
            chat_id: "chat-a".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.chat_id, "chat-a");
    let memory = got.memory.expect("memory");
    assert_eq!(
        (memory.version, memory.general_summary.as_str()),
        (1, "hello")
    );
    assert_eq!(
        memory.token_counts.map(|t| (t.user_confirmed, t.total)),
        Some((2, 10))
    );
    let freshness = got.freshness.expect("freshness");
    assert_eq!(
        (freshness.last_applied_job_id, freshness.pending_jobs),
        (first.clone(), 1)
    );
    let job = store
        .client
        .get_job(GetJobRequest {
            access: None,
            job_id: first.clone(),
        })
        .await
        .expect("job")
        .into_inner();
    assert_eq!(
        JobState::try_from(job.state).ok(),
        Some(JobState::Succeeded)
    );
    assert_eq!(
        (job.resulting_version, job.attempts, job.stream_seq),
        (Some(1), 1, 1)
    );

    // The next job builds on the stored memory, state included.
    let begun = store
        .client
        .begin_job(begin(&second, "chat-a", 2))
        .await
        .expect("begin")
        .into_inner();
    let prior = begun.prior.expect("prior memory");
    assert_eq!(
        (begun.prior_version, prior.state_json.as_str()),
        (1, r#"{"items":[1,2]}"#)
    );
}

#[tokio::test]
async fn a_redelivered_job_is_already_applied_and_a_second_commit_changes_nothing() {
    let mut store = TestStore::start().await;
    let job = job_id();
    assert_eq!(store.apply(&job, "chat-b", 7, "once").await.version, 1);

    let again = store
        .client
        .begin_job(begin(&job, "chat-b", 7))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(skip(&again), SkipReason::AlreadyApplied);
    let recommit = store
        .client
        .commit_job(commit(&job, "chat-b", 7, 1, "twice"))
        .await
        .expect("commit")
        .into_inner();

    assert_eq!(
        (outcome(&recommit), recommit.version),
        (CommitOutcome::AlreadyApplied, 1)
    );
    assert_eq!(store.version("chat-b").await, 1);
}

#[tokio::test]
async fn a_stale_expected_version_is_a_version_conflict_and_writes_nothing() {
    let mut store = TestStore::start().await;
    store.apply(&job_id(), "chat-c", 1, "first").await;
    let late = job_id();
    store
        .client
        .begin_job(begin(&late, "chat-c", 2))
        .await
        .expect("begin");

    let r = store
        .client
        .commit_job(commit(&late, "chat-c", 2, 0, "stale"))
        .await
        .expect("commit")
        .into_inner();

    assert_eq!(
        (outcome(&r), r.version),
        (CommitOutcome::VersionConflict, 1)
    );
    let got = store
        .client
        .get_memory(GetMemoryRequest {
            access: None,
            chat_id: "chat-c".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        got.memory.map(|m| (m.version, m.general_summary)),
        Some((1, "first".into()))
    );
    assert_eq!(store.job_state(&late).await.0, JobState::Running);
}

#[tokio::test]
async fn a_job_older_than_the_applied_one_is_superseded() {
    let mut store = TestStore::start().await;
    store.apply(&job_id(), "chat-d", 10, "newer").await;
    let (old, older) = (job_id(), job_id());

    let begun = store
        .client
        .begin_job(begin(&old, "chat-d", 5))
        .await
        .expect("begin")
        .into_inner();
    let committed = store
        .client
        .commit_job(commit(&older, "chat-d", 4, 1, "older"))
        .await
        .expect("commit")
        .into_inner();

    assert_eq!(skip(&begun), SkipReason::Superseded);
    assert_eq!(
        store.job_state(&old).await,
        (JobState::Failed, "superseded by a later update".into())
    );
    assert_eq!(
        (outcome(&committed), committed.version),
        (CommitOutcome::Superseded, 1)
    );
    assert_eq!(store.version("chat-d").await, 1);
}

#[tokio::test]
async fn delete_chat_discards_jobs_accepted_before_it_and_applies_later_ones() {
    let mut store = TestStore::start().await;
    store.apply(&job_id(), "chat-e", 1, "before").await;
    let queued = job_id();
    store
        .client
        .record_accepted(accepted(&queued, "chat-e", 2))
        .await
        .expect("record");

    let deleted = store
        .client
        .delete_chat(DeleteChatRequest {
            access: None,
            chat_id: "chat-e".into(),
            through_stream_seq: 2,
        })
        .await
        .expect("delete")
        .into_inner();

    assert!(deleted.memory_deleted);
    assert_eq!(deleted.jobs_removed, 2);
    let gone = store
        .client
        .get_memory(GetMemoryRequest {
            access: None,
            chat_id: "chat-e".into(),
        })
        .await;
    assert_eq!(gone.err().map(|s| s.code()), Some(Code::NotFound));
    let begun = store
        .client
        .begin_job(begin(&queued, "chat-e", 2))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(skip(&begun), SkipReason::ChatDeleted);
    let r = store
        .client
        .commit_job(commit(&queued, "chat-e", 2, 0, "resurrected"))
        .await
        .expect("commit")
        .into_inner();
    assert_eq!(outcome(&r), CommitOutcome::ChatDeleted);
    let unknown = store
        .client
        .get_job(GetJobRequest {
            access: None,
            job_id: queued,
        })
        .await;
    assert_eq!(
        unknown.err().map(|s| s.code()),
        Some(Code::NotFound),
        "a discarded job leaves no row"
    );
    let ignored = store
        .client
        .record_accepted(accepted(&job_id(), "chat-e", 1))
        .await
        .expect("record")
        .into_inner();
    assert!(
        !ignored.inserted,
        "a job accepted before the delete is not recorded"
    );

    let after = job_id();
    let begun = store
        .client
        .begin_job(begin(&after, "chat-e", 3))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(
        (skip(&begun), begun.prior, begun.prior_version),
        (SkipReason::Unspecified, None, 0)
    );
    let r = store
        .client
        .commit_job(commit(&after, "chat-e", 3, 0, "after"))
        .await
        .expect("commit")
        .into_inner();
    assert_eq!((outcome(&r), r.version), (CommitOutcome::Applied, 1));
}

#[tokio::test]
async fn record_accepted_is_idempotent_and_never_regresses_a_succeeded_job() {
    let mut store = TestStore::start().await;
    let job = job_id();

    let first = store
        .client
        .record_accepted(accepted(&job, "chat-f", 1))
        .await
        .expect("record")
        .into_inner();
    let second = store
        .client
        .record_accepted(accepted(&job, "chat-f", 1))
        .await
        .expect("record")
        .into_inner();
    assert_eq!((first.inserted, second.inserted), (true, false));
    assert_eq!(store.job_state(&job).await.0, JobState::Queued);

    store.apply(&job, "chat-f", 1, "done").await;
    let late = store
        .client
        .record_accepted(accepted(&job, "chat-f", 1))
        .await
        .expect("record")
        .into_inner();

    assert!(!late.inserted);
    assert!(
        !late.earlier_acceptance,
        "the same stream message is not a repeated request"
    );
    assert_eq!(store.job_state(&job).await.0, JobState::Succeeded);

    // The same job id as another stream message: a request repeated beyond
    // JetStream's duplicate window.
    let repeated = store
        .client
        .record_accepted(accepted(&job, "chat-f", 9))
        .await
        .expect("record")
        .into_inner();
    assert!(!repeated.inserted);
    assert!(repeated.earlier_acceptance);
    assert_eq!(store.job_state(&job).await.0, JobState::Succeeded);
}

#[tokio::test]
async fn fail_job_records_errors_and_never_touches_a_succeeded_job() {
    let mut store = TestStore::start().await;
    let (flaky, broken, done) = (job_id(), job_id(), job_id());
    let fail = |job: &str, seq: u64, attempt: u32, terminal: bool| FailJobRequest {
        job_id: job.into(),
        chat_id: "chat-g".into(),
        stream_seq: seq,
        attempt,
        error: format!("attempt {attempt} failed"),
        terminal,
    };
    store
        .client
        .record_accepted(accepted(&flaky, "chat-g", 1))
        .await
        .expect("record");

    store
        .client
        .fail_job(fail(&flaky, 1, 2, false))
        .await
        .expect("fail");
    let job = store
        .client
        .get_job(GetJobRequest {
            access: None,
            job_id: flaky.clone(),
        })
        .await
        .expect("job")
        .into_inner();
    assert_eq!(JobState::try_from(job.state).ok(), Some(JobState::Running));
    assert_eq!((job.attempts, job.error.as_str()), (2, "attempt 2 failed"));

    store
        .client
        .fail_job(fail(&broken, 2, 5, true))
        .await
        .expect("fail");
    assert_eq!(
        store.job_state(&broken).await,
        (JobState::Failed, "attempt 5 failed".into())
    );
    let begun = store
        .client
        .begin_job(begin(&broken, "chat-g", 2))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(skip(&begun), SkipReason::AlreadyFailed);

    store.apply(&done, "chat-g", 3, "ok").await;
    store
        .client
        .fail_job(fail(&done, 3, 2, true))
        .await
        .expect("fail");
    assert_eq!(
        store.job_state(&done).await,
        (JobState::Succeeded, String::new())
    );
}

#[tokio::test]
async fn get_memory_of_an_unknown_chat_is_not_found_without_details() {
    let mut store = TestStore::start().await;

    let status = store
        .client
        .get_memory(GetMemoryRequest {
            access: None,
            chat_id: "secret-chat".into(),
        })
        .await
        .expect_err("none");

    assert_eq!(status.code(), Code::NotFound);
    assert!(
        !status.message().contains("secret-chat"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn get_job_rejects_a_malformed_id_and_reports_an_unknown_one_as_not_found() {
    let mut store = TestStore::start().await;

    let bad = store
        .client
        .get_job(GetJobRequest {
            access: None,
            job_id: "not-a-uuid".into(),
        })
        .await
        .expect_err("bad");
    let unknown = store
        .client
        .get_job(GetJobRequest {
            access: None,
            job_id: job_id(),
        })
        .await
        .expect_err("unknown");

    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("job_id: "), "{}", bad.message());
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn invalid_inputs_are_rejected_naming_the_field() {
    let mut store = TestStore::start().await;
    let job = job_id();
    let c = &mut store.client;
    let cases: Vec<(&str, Result<(), tonic::Status>, &str)> = vec![
        (
            "empty chat in begin",
            c.begin_job(begin(&job, "", 1)).await.map(drop),
            "chat_id: must not be empty",
        ),
        (
            "empty chat in commit",
            c.commit_job(commit(&job, "", 1, 0, "x")).await.map(drop),
            "chat_id: must not be empty",
        ),
        (
            "empty chat in record",
            c.record_accepted(accepted(&job, "", 1)).await.map(drop),
            "chat_id: must not be empty",
        ),
        (
            "empty chat in get",
            c.get_memory(GetMemoryRequest {
                access: None,
                chat_id: String::new(),
            })
            .await
            .map(drop),
            "chat_id: must not be empty",
        ),
        (
            "bad job id",
            c.begin_job(begin("job-1", "chat", 1)).await.map(drop),
            "job_id: ",
        ),
        (
            "zero seq",
            c.begin_job(begin(&job, "chat", 0)).await.map(drop),
            "stream_seq: ",
        ),
        (
            "zero seq in commit",
            c.commit_job(commit(&job, "chat", 0, 0, "x"))
                .await
                .map(drop),
            "stream_seq: ",
        ),
    ];
    for (case, result, prefix) in cases {
        let status = result.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}");
        assert!(
            status.message().starts_with(prefix),
            "{case}: {}",
            status.message()
        );
    }
    let mut bad_state = commit(&job, "chat", 1, 0, "x");
    if let Some(content) = bad_state.content.as_mut() {
        content.state_json = "{not json".into();
    }
    let status = store
        .client
        .commit_job(bad_state)
        .await
        .expect_err("bad json");
    assert!(
        status.message().starts_with("content.state_json: "),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn health_is_serving_for_the_server_and_the_store_service() {
    let store = TestStore::start().await;
    let mut health = HealthClient::new(store.channel.clone());

    for service in ["", "chatmemory.store.v1.MemoryStore"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner();
        assert_eq!(
            ServingStatus::try_from(r.status).ok(),
            Some(ServingStatus::Serving),
            "{service:?}"
        );
    }
    assert!(store.stop().await.is_ok(), "run returns Ok after shutdown");
}

#[tokio::test]
async fn run_with_an_unreachable_database_fails_fast_with_database_unavailable() {
    let mut settings = Settings::default();
    settings.database.url = "postgres://postgres@127.0.0.1:1/chat_memory".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let started = Instant::now();

    let result = tokio::time::timeout(
        Duration::from_secs(10),
        memory_store::run(settings, listener, std::future::pending()),
    )
    .await
    .expect("run gives up by itself");

    assert!(
        matches!(result, Err(StoreError::DatabaseUnavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn run_against_an_unmigrated_database_is_schema_not_migrated() {
    let db = TestDb::create(false).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");

    let result = tokio::time::timeout(
        Duration::from_secs(10),
        memory_store::run(db.settings(), listener, std::future::pending()),
    )
    .await
    .expect("run gives up by itself");

    match result {
        Err(e @ StoreError::SchemaNotMigrated { .. }) => {
            assert!(e.to_string().contains("chat-memory-migrate up"), "{e}");
        }
        other => panic!("expected SchemaNotMigrated, got {other:?}"),
    }
}

#[tokio::test]
async fn twenty_concurrent_commits_with_the_same_expected_version_apply_exactly_once() {
    let store = TestStore::start().await;
    let commits = (1..=20u64).map(|seq| {
        let mut client = store.client.clone();
        tokio::spawn(async move {
            let request = commit(&job_id(), "chat-race", seq, 0, &format!("from {seq}"));
            client
                .commit_job(request)
                .await
                .map(|r| outcome(&r.into_inner()))
        })
    });

    let mut outcomes = Vec::new();
    for handle in commits.collect::<Vec<_>>() {
        outcomes.push(handle.await.expect("task").expect("commit"));
    }

    let applied = outcomes
        .iter()
        .filter(|o| **o == CommitOutcome::Applied)
        .count();
    assert_eq!(applied, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            CommitOutcome::Applied | CommitOutcome::VersionConflict | CommitOutcome::Superseded
        )),
        "{outcomes:?}"
    );
    let mut store = store;
    assert_eq!(store.version("chat-race").await, 1);
}

#[tokio::test]
async fn an_applied_job_leaves_one_apply_audit_row_written_with_the_memory() {
    let mut store = TestStore::start().await;
    let job = job_id();
    let chat = "tenant-x/chat-audit";
    let r = store.apply(&job, chat, 1, "first").await;
    assert_eq!(outcome(&r), CommitOutcome::Applied);
    // A redelivery of the same job changes nothing, the audit included.
    let again = store
        .client
        .commit_job(commit(&job, chat, 1, 1, "again"))
        .await
        .expect("commit")
        .into_inner();
    assert_eq!(outcome(&again), CommitOutcome::AlreadyApplied);

    let rows = store
        .client
        .query_audit(chat_memory_proto::store::QueryAuditRequest {
            tenant: "tenant-x".into(),
            filter: Some(chat_memory_proto::v1::QueryAuditRequest {
                action: "apply".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("query")
        .into_inner()
        .entries;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (
            rows[0].chat_id.as_str(),
            rows[0].job_id.as_str(),
            rows[0].detail.as_str()
        ),
        ("chat-audit", job.as_str(), "version 1")
    );
}
