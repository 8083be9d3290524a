//! What a memory holds: an update round-trips to a readable memory with its
//! three fields and token counts, later updates build on it, and freshness
//! counts the jobs still pending.

use chat_memory_proto::v1::JobState;
use test_support::requests::{assistant, get, memory, send, update, user};
use test_support::{TestStack, wait};

use super::JOB_TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_round_trips_to_a_readable_memory() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;

    let job_id = send(
        &mut client,
        update(
            "chat-roundtrip",
            vec![
                user("My plan is Aetna Choice POS II and my member ID is W123456789."),
                assistant(
                    "It sounds like you probably have already met your deductible this year.",
                ),
            ],
        ),
    )
    .await;
    let status = stack.wait_job_done(&job_id, JOB_TIMEOUT).await;
    assert_eq!(
        status.state,
        JobState::Succeeded as i32,
        "job status: {status:?}"
    );
    assert_eq!(status.resulting_version, Some(1));

    let got = memory(&mut client, "chat-roundtrip").await;
    let m = got.memory.expect("memory present");
    assert!(
        m.user_confirmed.contains("W123456789"),
        "user_confirmed: {}",
        m.user_confirmed
    );
    assert!(
        !m.user_confirmed.contains("deductible"),
        "a guess leaked into user_confirmed: {}",
        m.user_confirmed
    );
    assert!(
        m.llm_inferred.contains("deductible"),
        "llm_inferred: {}",
        m.llm_inferred
    );
    assert!(!m.general_summary.is_empty());
    assert_eq!(m.version, 1);
    let tokens = m.token_counts.expect("token counts");
    assert!(tokens.user_confirmed > 0);
    assert_eq!(
        tokens.total,
        tokens.user_confirmed + tokens.llm_inferred + tokens.general_summary
    );
    let fresh = got.freshness.expect("freshness");
    assert_eq!(fresh.last_applied_job_id, job_id);
    assert_eq!(fresh.pending_jobs, 0);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_builds_on_the_prior_memory_over_three_updates() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let chat = "chat-continuity";
    let batches = [
        vec![user(
            "My member ID is BCX-44821 and I am on the Blue Cross PPO Gold plan.",
        )],
        vec![
            user("I take Humira 40 mg every two weeks for Crohn's disease."),
            assistant("Humira usually needs prior authorization."),
        ],
        vec![user("My rheumatologist is Dr. Patel at Cedars-Sinai.")],
    ];
    for batch in batches {
        let job = send(&mut client, update(chat, batch)).await;
        let status = stack.wait_job_done(&job, JOB_TIMEOUT).await;
        assert_eq!(status.state, JobState::Succeeded as i32, "{status:?}");
    }
    let m = memory(&mut client, chat).await.memory.expect("memory");
    assert_eq!(m.version, 3);
    for fact in ["BCX-44821", "Humira", "Dr. Patel"] {
        assert!(
            m.user_confirmed.contains(fact),
            "{fact} lost from user_confirmed: {}",
            m.user_confirmed
        );
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_jobs_are_counted_until_applied() {
    let mut stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let first = send(
        &mut client,
        update("chat-pending", vec![user("My plan year starts January 1.")]),
    )
    .await;
    stack.wait_job_done(&first, JOB_TIMEOUT).await;
    stack.kill_worker(0);
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(
            send(
                &mut client,
                update(
                    "chat-pending",
                    vec![user(&format!("Visit {i} cost a $30 copay."))],
                ),
            )
            .await,
        );
    }
    let got = memory(&mut client, "chat-pending").await;
    assert_eq!(got.freshness.expect("freshness").pending_jobs, 3);
    stack.add_worker().await;
    wait::until("pending jobs to drain", JOB_TIMEOUT, || {
        let mut client = client.clone();
        async move {
            let got = client
                .get_memory(get("chat-pending"))
                .await
                .ok()?
                .into_inner();
            (got.freshness?.pending_jobs == 0).then_some(())
        }
    })
    .await;
    // The three waiting updates may be folded into fewer summarizer calls
    // (coalescing): each call makes one version, and every update says which
    // call applied it and at which version.
    let version = memory(&mut client, "chat-pending")
        .await
        .memory
        .expect("memory")
        .version;
    let mut calls = std::collections::BTreeMap::new();
    for job in &waiting {
        let status = stack.wait_job_done(job, JOB_TIMEOUT).await;
        assert_eq!(status.state, JobState::Succeeded as i32, "{status:?}");
        let at = status.resulting_version.expect("resulting version");
        assert!(!status.applied_in_call.is_empty(), "{status:?}");
        assert_eq!(
            *calls.entry(status.applied_in_call.clone()).or_insert(at),
            at,
            "updates applied by one call share its version"
        );
    }
    assert_eq!(
        version,
        1 + i64::try_from(calls.len()).expect("few calls"),
        "one version per summarizer call: {calls:?}"
    );
    stack.shutdown().await;
}
