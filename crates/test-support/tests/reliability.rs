//! Reliability mechanisms against the real in-process stack: the agent circuit
//! breaker holds jobs through an agent outage instead of failing them; failed
//! jobs land in the dead-letter stream and a replay applies them once, or is
//! recorded superseded when the chat moved on.

use std::sync::Arc;
use std::time::Duration;

use chat_memory_proto::v1::JobState;
use job_queue::dlq::{self, DeadLetterEntry};
use summarizer_agent::backend::offline::OfflineBackend;
use test_support::requests::{get, send, update_status, user_update};
use test_support::stack::{succeeded, wait_job};
use test_support::switch::{Switch, SwitchedBackend};
use test_support::{StackOptions, TestStack, wait};
use tonic::Code;
use tonic_types::StatusExt;

const JOB_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_outage_opens_the_circuit_and_the_job_waits_instead_of_failing() {
    // Arrange: the agent is down; a job may spend only 2 attempts, and the
    // breaker opens after 2 failed calls and probes every 100 ms.
    let (stack, switch) = switched_stack(true, |w| {
        w.retry.max_attempts = 2;
        w.circuit.min_calls = 2;
        w.circuit.open_ms = 100;
    })
    .await;
    let mut client = stack.gateway().await;

    // Act: a job arrives during the outage.
    let job_id = send(
        &mut client,
        user_update("chat-outage", "My insurer is Aetna, member id W123."),
    )
    .await;

    // Assert: the agent sees several probes (far more calls than the job's two
    // attempts) and the job is still waiting, not failed.
    wait::until("probe calls during the outage", JOB_TIMEOUT, || {
        let n = switch.calls();
        async move { (n >= 5).then_some(()) }
    })
    .await;
    let status = client
        .get_update_status(update_status(&job_id))
        .await
        .unwrap_or_else(|s| panic!("status: {s:?}"))
        .into_inner();
    assert!(
        matches!(
            JobState::try_from(status.state),
            Ok(JobState::Queued | JobState::Running)
        ),
        "the job must wait while the circuit is open: {status:?}"
    );

    // The agent comes back: the next probe closes the circuit and the job applies.
    switch.set_down(false);
    let status = stack.wait_job_done(&job_id, JOB_TIMEOUT).await;
    assert_eq!(status.state, JobState::Succeeded as i32, "{status:?}");
    assert_eq!(status.resulting_version, Some(1));
    stack.shutdown().await;
}

/// D-19: a job whose every call fails, alone on an idle agent, keeps the
/// circuit open by itself; the bound on its own failed calls while the circuit
/// is open fails it (dead-lettered, replayable) instead of holding its chat forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_own_calls_keep_failing_while_the_circuit_is_open_fails_at_the_bound() {
    let (stack, switch) = switched_stack(true, |w| {
        w.retry.max_attempts = 10;
        w.circuit.min_calls = 2;
        w.circuit.open_ms = 100;
        w.circuit.max_failed_calls_per_job = 3;
    })
    .await;
    let mut client = stack.gateway().await;

    let job_id = send(
        &mut client,
        user_update("chat-poison", "My insurer is Aetna, member id W123."),
    )
    .await;

    let status = stack.wait_job_done(&job_id, JOB_TIMEOUT).await;
    assert_eq!(status.state, JobState::Failed as i32, "{status:?}");
    assert!(
        status.error.contains("while the circuit was open"),
        "{status:?}"
    );
    // One call with the circuit closed (an attempt spent), the one that opened
    // it, then two failed probes: the third failure under an open circuit.
    assert_eq!(switch.calls(), 4);
    assert_eq!(dead_letters(&stack, 1).await.len(), 1, "replayable");
    stack.shutdown().await;
}

/// The same bound reached by a coalesced batch: its jobs are tried one by one,
/// so only the job whose calls keep failing fails, and the other applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_bound_a_coalesced_batch_is_split_and_only_the_failing_job_fails() {
    let error = split_batch("chat-split", |w| {
        w.retry.max_attempts = 10;
        w.circuit.min_calls = 2;
        w.circuit.open_ms = 100;
        w.circuit.max_failed_calls_per_job = 3;
    })
    .await;
    assert!(error.contains("while the circuit was open"), "{error}");
}

/// A coalesced batch that spends its attempts on transient failures is tried
/// job by job before anything fails: the job that alone keeps failing fails,
/// the other applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coalesced_batch_out_of_attempts_is_split_and_only_the_failing_job_fails() {
    let error = split_batch("chat-attempts", |w| {
        w.retry.max_attempts = 2;
        w.retry.initial_backoff_ms = 10;
        w.retry.max_backoff_ms = 20;
        w.circuit.enabled = false;
    })
    .await;
    assert!(error.contains("after 2 attempts"), "{error}");
}

/// A healthy job and one whose agent calls always fail (transiently), queued
/// on `chat` before a worker tuned by `tune` starts, so it takes them as one
/// batch: checks that they went to the agent together first, that the
/// healthy one applied and the other failed and was dead-lettered, and
/// answers the failed job's error.
async fn split_batch(chat: &str, tune: impl FnOnce(&mut summarizer_worker::Settings)) -> String {
    let switch = Switch::new(Arc::new(OfflineBackend::new()), false);
    switch.poison("POISON");
    let mut stack = TestStack::start_with(StackOptions {
        workers: 0,
        backend: Some(Arc::new(SwitchedBackend(switch.clone()))),
        ..StackOptions::default()
    })
    .await;
    let mut client = stack.gateway().await;
    let healthy = send(
        &mut client,
        user_update(chat, "My insurer is Aetna, member id W123."),
    )
    .await;
    let poisoned = send(
        &mut client,
        user_update(chat, "POISON: this job's calls always fail."),
    )
    .await;
    tune(&mut stack.worker_settings);
    stack.add_worker().await;

    let healthy = stack.wait_job_done(&healthy, JOB_TIMEOUT).await;
    let poisoned = stack.wait_job_done(&poisoned, JOB_TIMEOUT).await;
    assert!(
        switch
            .coalesced_calls
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "the two jobs went to the agent together first"
    );
    assert_eq!(healthy.state, JobState::Succeeded as i32, "{healthy:?}");
    assert_eq!(healthy.resulting_version, Some(1));
    assert_eq!(poisoned.state, JobState::Failed as i32, "{poisoned:?}");
    assert_eq!(dead_letters(&stack, 1).await.len(), 1);
    stack.shutdown().await;
    poisoned.error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_circuit_disabled_an_agent_outage_fails_the_job_after_its_attempts() {
    // The control for the test above: same outage, breaker off.
    let (stack, switch) = switched_stack(true, |w| {
        w.retry.max_attempts = 2;
        w.circuit.enabled = false;
    })
    .await;
    let mut client = stack.gateway().await;

    let job_id = send(
        &mut client,
        user_update("chat-outage", "My insurer is Aetna, member id W123."),
    )
    .await;

    let status = stack.wait_job_done(&job_id, JOB_TIMEOUT).await;
    assert_eq!(status.state, JobState::Failed as i32, "{status:?}");
    assert_eq!(switch.calls(), 2, "exactly the job's attempts");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_providers_rate_limit_holds_the_job_for_its_retry_after_without_spending_attempts() {
    // Arrange: the model refuses the first 3 calls with 429 and Retry-After
    // 300 ms; the worker's own backoff is 10-20 ms, a job may spend only 2
    // attempts, and the breaker would open after 2 failed calls.
    let retry_after = Duration::from_millis(300);
    let (stack, switch) = switched_stack(false, |w| {
        w.retry.max_attempts = 2;
        w.retry.initial_backoff_ms = 10;
        w.retry.max_backoff_ms = 20;
        w.circuit.min_calls = 2;
    })
    .await;
    switch.rate_limit_next(3, retry_after);
    let mut client = stack.gateway().await;
    let started = std::time::Instant::now();

    // Act
    let job_id = send(
        &mut client,
        user_update("chat-429", "My insurer is Aetna, member id W123."),
    )
    .await;
    let status = stack.wait_job_done(&job_id, JOB_TIMEOUT).await;

    // Assert: applied once the limit lifted, on the fourth call; three waits
    // of at least the Retry-After (the backoff alone would have taken < 0.1 s).
    assert_eq!(status.state, JobState::Succeeded as i32, "{status:?}");
    assert_eq!(status.resulting_version, Some(1));
    assert_eq!(
        switch.calls(),
        4,
        "three refusals, then the call that applied it"
    );
    assert!(
        started.elapsed() >= retry_after * 3,
        "the worker waited out each Retry-After: {:?}",
        started.elapsed()
    );
    stack.shutdown().await;
}

/// A stack whose agent is switched down, with the breaker off and 2 attempts,
/// so a job is dead-lettered quickly.
async fn failing_stack() -> (TestStack, Arc<Switch>) {
    let (stack, switch) = switched_stack(true, |w| {
        w.retry.max_attempts = 2;
        w.circuit.enabled = false;
    })
    .await;
    (stack, switch)
}

/// A stack whose agent answers through a [`Switch`] (down from the start if
/// `down`), with one worker started on the settings `tune` leaves.
async fn switched_stack(
    down: bool,
    tune: impl FnOnce(&mut summarizer_worker::Settings),
) -> (TestStack, Arc<Switch>) {
    let switch = Switch::new(Arc::new(OfflineBackend::new()), down);
    let mut stack = TestStack::start_with(StackOptions {
        workers: 0,
        backend: Some(Arc::new(SwitchedBackend(switch.clone()))),
        ..StackOptions::default()
    })
    .await;
    tune(&mut stack.worker_settings);
    stack.add_worker().await;
    (stack, switch)
}

async fn dead_letters(stack: &TestStack, n: usize) -> Vec<DeadLetterEntry> {
    let js = stack.jetstream().await;
    wait::until(&format!("{n} dead letter(s)"), JOB_TIMEOUT, || {
        let js = js.clone();
        let queue = stack.queue.clone();
        async move {
            let list = dlq::list(&js, &queue, 100).await.ok()?;
            (list.len() == n).then_some(list)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_exhausts_its_attempts_is_dead_lettered_and_a_replay_applies_it_once() {
    let (stack, switch) = failing_stack().await;
    let mut client = stack.gateway().await;
    let job_id = send(
        &mut client,
        user_update("chat-dlq", "My insurer is Aetna, member id W123."),
    )
    .await;
    let status = stack.wait_job_done(&job_id, JOB_TIMEOUT).await;
    assert_eq!(status.state, JobState::Failed as i32, "{status:?}");

    // The failed job is in the dead-letter stream with its reason.
    let letters = dead_letters(&stack, 1).await;
    assert_eq!(letters[0].job_id, job_id);
    assert!(
        letters[0]
            .reason
            .contains("agent unavailable after 2 attempts"),
        "{letters:?}"
    );

    // The operator's CLI lists it, with its reason.
    let listed = std::process::Command::new(test_support::processes::bin_dir().join("chat-memory"))
        .args([
            "dlq",
            "--nats",
            &stack.queue.url,
            "--stream",
            &stack.queue.stream,
            "--subject-prefix",
            &stack.queue.subject_prefix,
            "list",
        ])
        .output()
        .unwrap_or_else(|e| panic!("chat-memory (build the binaries first): {e}"));
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(&job_id) && listed.contains("agent unavailable"),
        "{listed}"
    );

    // The agent recovers; the replay applies the job, once.
    switch.set_down(false);
    let js = stack.jetstream().await;
    dlq::replay(&js, &stack.queue, letters[0].dlq_seq)
        .await
        .unwrap_or_else(|e| panic!("replay: {e}"));
    let status = wait_job(&client, &job_id, "succeed", JOB_TIMEOUT, succeeded).await;
    assert_eq!(status.resulting_version, Some(1));
    assert!(
        dlq::list(&js, &stack.queue, 100)
            .await
            .unwrap_or_else(|e| panic!("list: {e}"))
            .is_empty(),
        "a replayed letter leaves the dead-letter stream"
    );
    let memory = client
        .get_memory(get("chat-dlq"))
        .await
        .unwrap_or_else(|s| panic!("get_memory: {s:?}"))
        .into_inner()
        .memory
        .unwrap_or_else(|| panic!("no memory after the replay"));
    assert_eq!(memory.version, 1);
    assert_eq!(memory.user_confirmed.matches("W123").count(), 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_does_not_overwrite_a_newer_memory_and_is_recorded_superseded() {
    let (stack, switch) = failing_stack().await;
    let mut client = stack.gateway().await;
    let old = send(
        &mut client,
        user_update("chat-dlq-order", "My insurer is Aetna."),
    )
    .await;
    stack.wait_job_done(&old, JOB_TIMEOUT).await;
    let letters = dead_letters(&stack, 1).await;

    // A later job of the chat is applied after the agent recovers.
    switch.set_down(false);
    let newer = send(
        &mut client,
        user_update("chat-dlq-order", "I switched to Cigna."),
    )
    .await;
    let status = stack.wait_job_done(&newer, JOB_TIMEOUT).await;
    assert_eq!(status.state, JobState::Succeeded as i32, "{status:?}");

    // Replaying the older job must not reorder the chat.
    let js = stack.jetstream().await;
    dlq::replay(&js, &stack.queue, letters[0].dlq_seq)
        .await
        .unwrap_or_else(|e| panic!("replay: {e}"));
    let status = wait_job(&client, &old, "be judged superseded", JOB_TIMEOUT, |s| {
        s.error.contains("superseded")
    })
    .await;
    assert_eq!(status.state, JobState::Failed as i32, "{status:?}");
    let memory = client
        .get_memory(get("chat-dlq-order"))
        .await
        .unwrap_or_else(|s| panic!("get_memory: {s:?}"))
        .into_inner()
        .memory
        .unwrap_or_else(|| panic!("no memory"));
    assert_eq!(memory.version, 1, "only the newer job applied");
    assert!(
        !memory.user_confirmed.contains("Aetna"),
        "{}",
        memory.user_confirmed
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlogged_chat_refuses_updates_with_a_retry_hint_while_reads_keep_working() {
    // Arrange: a chat may hold at most 2 unfinished jobs; a first memory applied,
    // then the agent goes down so jobs pile up.
    let switch = Switch::new(Arc::new(OfflineBackend::new()), false);
    let mut stack = TestStack::start_with(StackOptions {
        workers: 0,
        backend: Some(Arc::new(SwitchedBackend(switch.clone()))),
        backpressure: gateway::backpressure::BackpressureSettings {
            max_chat_jobs: 2,
            cache_ms: 0,
            ..Default::default()
        },
        ..StackOptions::default()
    })
    .await;
    // The held job must not end (and leave the queue) during the test.
    stack.worker_settings.retry.max_attempts = 1_000;
    stack.add_worker().await;
    let mut client = stack.gateway().await;
    let first = send(&mut client, user_update("chat-bp", "My insurer is Aetna.")).await;
    stack.wait_job_done(&first, JOB_TIMEOUT).await;
    switch.set_down(true);

    // Act: updates until the chat has 2 unfinished jobs, then one more.
    for text in ["I moved to Denver.", "My PCP is Dr. Alvarez."] {
        client
            .update_memory(user_update("chat-bp", text))
            .await
            .unwrap_or_else(|s| panic!("update under the limit rejected: {s:?}"));
    }
    let refused = client
        .update_memory(user_update("chat-bp", "One too many."))
        .await
        .err()
        .unwrap_or_else(|| panic!("the third queued update must be refused"));

    // Assert: RESOURCE_EXHAUSTED with RetryInfo; reads still answer.
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let retry = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo: {refused:?}"));
    assert_eq!(retry, Duration::from_secs(5));
    assert!(refused.metadata().get("retry-after").is_some());
    let reason = refused.get_details_error_info().map(|i| i.reason);
    assert_eq!(reason.as_deref(), Some("UPDATES_BACKLOGGED"));
    let memory = client
        .get_memory(get("chat-bp"))
        .await
        .unwrap_or_else(|s| panic!("reads must work while the agent is down: {s:?}"))
        .into_inner()
        .memory
        .unwrap_or_else(|| panic!("no memory"));
    assert_eq!(memory.version, 1);
    stack.shutdown().await;
}
