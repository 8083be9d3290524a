//! memory-store's gRPC API against a real Postgres: one fresh database per test,
//! migrated with `migration::Migrator`, the server on port 0, a tonic client.
//!
//! - [`batches`]: coalesced BeginJobs/CommitJobs, ClaimChat and job owners.
//! - [`commits`]: exactly-once application: versions, redelivery, supersession,
//!   concurrent commits, the `apply` audit row.
//! - [`jobs`]: job records: acceptance, failure, deletion of a chat.
//! - [`errors`]: NOT_FOUND and INVALID_ARGUMENT naming the field.
//! - [`retention`]: audit days dropped and ended job records purged, both audited; inactive
//!   chats expired counting from their last accepted update.
//! - [`startup`]: health, and failing fast on a missing or unmigrated database.
//!
//! The harness ([`TestStore`] over a `test_db::TestDatabase`, request builders)
//! is here; the modules are one test binary.

mod batches;
mod commits;
mod errors;
mod jobs;
mod reads;
mod retention;
mod startup;

use std::time::{Duration, Instant};

use chat_memory_proto::{
    store::{
        BeginJobRequest, CommitJobRequest, CommitOutcome, DeleteChatRequest, FailJobRequest,
        GetJobRequest, GetMemoryRequest, MemoryContent, RecordAcceptedRequest, SkipReason,
        memory_store_client::MemoryStoreClient,
    },
    v1::{JobState, TokenCounts},
};
use memory_store::{Settings, StoreError, settings::DatabaseSettings};
use test_db::TestDatabase;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

// ---------------------------------------------------------------- helpers

/// memory-store's settings for `db` (tests run retention passes themselves,
/// `retention::sweep_once`).
fn settings(db: &TestDatabase) -> Settings {
    Settings {
        database: DatabaseSettings {
            url: db.url.clone(),
            max_connections: 10,
            min_connections: 1,
            connect_timeout_ms: 2000,
            acquire_timeout_ms: 2000,
        },
        retention: memory_store::settings::RetentionSettings {
            audit_days: 0,
            job_days: 0,
            ..Default::default()
        },
        ..Settings::default()
    }
}

/// memory-store running on port 0 over a fresh, migrated database.
struct TestStore {
    client: MemoryStoreClient<Channel>,
    channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), StoreError>>,
    // Last field: dropped after the server was told to stop.
    _db: TestDatabase,
}

impl TestStore {
    async fn start() -> Self {
        let db = TestDatabase::create().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(memory_store::run(settings(&db), listener, async {
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

/// Two request digests (SHA-256, hex) of different requests.
const DIGEST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

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
        audit: None,
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
        accept_audit: None,
        request_hash: String::new(),
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

/// The chat has no memory (NOT_FOUND for a read without access checks).
async fn assert_no_memory(store: &mut TestStore, chat: &str) {
    let read = store
        .client
        .get_memory(GetMemoryRequest {
            access: None,
            chat_id: chat.into(),
        })
        .await;
    assert_eq!(
        read.expect_err("no memory").code(),
        Code::NotFound,
        "{chat}"
    );
}
