//! Operations a platform team runs, exercised on the real binaries:
//! `scripts/ops/backup.sh` and `scripts/ops/restore.sh` (Postgres with
//! pg_dump / pg_restore, the JetStream streams with `chat-memory streams`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};

use chat_memory_proto::v1::JobState;
use test_support::processes::{ProcessOptions, ProcessStack, bin_dir, gateway_client};
use test_support::requests::{after_job, memory, send, update_status, user_update};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `scripts/ops/<script> <dir>` against the stack's database and streams.
fn run_script(stack: &ProcessStack, script: &str, dir: &Path) {
    let queue = stack.queue_settings();
    let output = std::process::Command::new(repo_root().join("scripts/ops").join(script))
        .arg(dir)
        .env("CHAT_MEMORY__DATABASE__URL", &stack.database.url)
        .env("CHAT_MEMORY__NATS__URL", &queue.url)
        .env("CHAT_MEMORY__NATS__STREAM", &queue.stream)
        .env("CHAT_MEMORY_CLI", bin_dir().join("chat-memory"))
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "{script}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A deployment lost (database emptied, streams deleted) and restored from a
/// backup taken while jobs were still queued: every applied job stays applied
/// once, and the queued ones apply after the restore, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restores_applied_memories_and_the_queued_jobs_apply_once_in_order() {
    let mut stack = ProcessStack::start(ProcessOptions::default()).await;
    let mut client = gateway_client(&stack).await;
    let mut applied = Vec::new();
    for text in [
        "My plan is Aetna Choice POS II.",
        "My deductible is $1,500.",
    ] {
        applied.push(send(&mut client, user_update("ops-a", text)).await);
    }
    let last = applied.last().cloned().unwrap_or_default();
    let before = client
        .get_memory(after_job("ops-a", &last, 10_000))
        .await
        .expect("applied")
        .into_inner()
        .memory
        .expect("memory");
    assert_eq!(before.version, 2);

    // Jobs queued while no worker runs: in the stream only.
    stack.kill("summarizer-worker").await;
    let queued = [
        send(&mut client, user_update("ops-a", "I take metformin daily.")).await,
        send(
            &mut client,
            user_update("ops-a", "My pharmacy is CVS on Main St."),
        )
        .await,
        send(
            &mut client,
            user_update("ops-b", "My member ID is W123456789."),
        )
        .await,
    ];

    let dir = stack.log_dir.join("backup");
    run_script(&stack, "backup.sh", &dir);

    // The disaster: services down, the database emptied, the streams gone.
    stack.kill("gateway").await;
    stack.kill("memory-store").await;
    let db = Database::connect(&stack.database.url).await.expect("db");
    db.execute_unprepared("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .await
        .expect("empty the database");
    db.close().await.expect("close");
    let js = job_queue::connect(&stack.queue_settings(), "ops-test")
        .await
        .expect("nats");
    for suffix in ["", "_DLQ", "_AUDIT"] {
        js.delete_stream(format!("{}{suffix}", stack.stream))
            .await
            .expect("delete stream");
    }

    run_script(&stack, "restore.sh", &dir);
    stack.spawn("memory-store").await;
    stack.spawn("gateway").await;
    stack.spawn("summarizer-worker").await;

    let mut client = gateway_client(&stack).await;
    let restored = memory(&mut client, "ops-a").await;
    assert!(
        restored.memory.is_some_and(|m| m.version >= 2),
        "the applied memory is back"
    );
    let a = client
        .get_memory(after_job("ops-a", &queued[1], 10_000))
        .await
        .expect("queued jobs of ops-a")
        .into_inner()
        .memory
        .expect("memory");
    let b = client
        .get_memory(after_job("ops-b", &queued[2], 10_000))
        .await
        .expect("queued job of ops-b")
        .into_inner()
        .memory
        .expect("memory");
    assert_eq!(b.version, 1);
    // Every job's record: the applied ones kept their versions; the queued
    // ones applied after them, in acceptance order (two may share one
    // coalesced call and its version), each once.
    let mut versions = Vec::new();
    for job in applied.iter().chain(&queued[..2]) {
        let status = client
            .get_update_status(update_status(job))
            .await
            .expect("status")
            .into_inner();
        assert_eq!(status.state(), JobState::Succeeded, "{job}");
        versions.push(status.resulting_version.unwrap_or_default());
    }
    assert_eq!(
        versions[..2],
        [1, 2],
        "the applied jobs kept their versions"
    );
    assert!(
        versions[2] >= 3 && versions[3] >= versions[2] && versions[3] <= 4,
        "the queued jobs applied once each, in order: {versions:?}"
    );
    assert_eq!(
        a.version, versions[3],
        "the memory is the last job's version"
    );
    // Nothing is left to apply: the restored jobs were consumed.
    stack
        .wait_until(
            "the restored jobs to be acknowledged",
            Duration::from_secs(10),
            || {
                let js = js.clone();
                let name = stack.stream.clone();
                async move {
                    let info = js
                        .get_stream(name)
                        .await
                        .ok()?
                        .info()
                        .await
                        .ok()?
                        .state
                        .messages;
                    (info == 0).then_some(())
                }
            },
        )
        .await;
    stack.shutdown().await;
}
