//! memory-store's gRPC API against a real Postgres: one fresh database per test,
//! migrated with `migration::Migrator`, the server on port 0, a tonic client.
//!
//! - [`batches`]: coalesced BeginJobs/CommitJobs, ClaimChat and job owners.
//! - [`commits`]: exactly-once application: versions, redelivery, supersession,
//!   concurrent commits, the `apply` audit row.
//! - [`jobs`]: job records: acceptance, failure, deletion of a chat.
//! - [`errors`]: NOT_FOUND and INVALID_ARGUMENT naming the field.
//! - [`retention`]: audit days dropped and ended job records purged, both audited.
//! - [`startup`]: health, and failing fast on a missing or unmigrated database.
//!
//! The harness ([`TestDb`], [`TestStore`], request builders) is here; the modules
//! are one test binary.

mod batches;
mod commits;
mod errors;
mod jobs;
mod retention;
mod startup;

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
            // Tests run retention passes themselves (`retention::sweep_once`).
            retention: memory_store::settings::RetentionSettings {
                audit_days: 0,
                job_days: 0,
                ..Default::default()
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

    /// The URL of the store's database (for checks the API does not offer).
    fn db_url(&self) -> &str {
        &self._db.url
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
        request_hash: String::new(),
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
