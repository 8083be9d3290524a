//! Job records: acceptance is idempotent, failures are recorded, deleting a
//! chat discards the jobs accepted before it.

use super::*;

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
async fn a_key_reused_for_other_messages_is_refused_even_when_the_worker_registered_the_job_first()
{
    let mut store = TestStore::start().await;
    let job = job_id();
    // The worker ran the job before the gateway's RecordAccepted arrived: the
    // row exists without the request's digest.
    store.apply(&job, "chat-key", 1, "applied").await;
    let first = RecordAcceptedRequest {
        idempotency_key: "turn-1".into(),
        request_hash: DIGEST_A.into(),
        ..accepted(&job, "chat-key", 1)
    };
    store
        .client
        .record_accepted(first.clone())
        .await
        .expect("the late acceptance of the same request is fine");
    // The same request again is a retry, still fine.
    store.client.record_accepted(first).await.expect("retry");
    // The key with other messages (JetStream deduplicated it to the same job).
    let other = RecordAcceptedRequest {
        idempotency_key: "turn-1".into(),
        request_hash: DIGEST_B.into(),
        ..accepted(&job, "chat-key", 1)
    };
    let refused = store
        .client
        .record_accepted(other)
        .await
        .expect_err("a different request under the same key");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("idempotency_key"), "{refused:?}");
}

#[tokio::test]
async fn a_job_the_worker_registers_keeps_its_digest_and_a_message_reusing_its_key_is_skipped() {
    let mut store = TestStore::start().await;
    let job = job_id();
    let keyed = |hash: &str, seq: u64| BeginJobRequest {
        request_hash: hash.into(),
        ..begin(&job, "t/key", seq)
    };
    // The gateway's RecordAccepted never landed (memory-store was down): the
    // worker's begin registers the job, with the request's digest.
    let begun = store
        .client
        .begin_job(keyed(DIGEST_A, 1))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(skip(&begun), SkipReason::Unspecified);
    store
        .client
        .commit_job(commit(&job, "t/key", 1, begun.prior_version, "plan noted"))
        .await
        .expect("commit");
    // A later acceptance of the key with other messages is refused by that
    // digest (before, the row had none and adopted the new one).
    let other = RecordAcceptedRequest {
        idempotency_key: "turn-1".into(),
        request_hash: DIGEST_B.into(),
        ..accepted(&job, "t/key", 2)
    };
    let refused = store
        .client
        .record_accepted(other)
        .await
        .expect_err("the key with other messages");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // A second message of the job id with other messages (accepted after
    // JetStream's duplicate window while memory-store was down) is skipped,
    // and nothing of it is written.
    let reused = store
        .client
        .begin_job(keyed(DIGEST_B, 2))
        .await
        .expect("begin the reuse")
        .into_inner();
    assert_eq!(skip(&reused), SkipReason::KeyReused);
    assert_eq!(
        store.job_state(&job).await,
        (JobState::Succeeded, String::new())
    );
    assert_eq!(store.version("t/key").await, 1);
    // The same request again is a repeat, already applied.
    let repeat = store
        .client
        .begin_job(keyed(DIGEST_A, 2))
        .await
        .expect("begin the repeat")
        .into_inner();
    assert_eq!(skip(&repeat), SkipReason::AlreadyApplied);
    // A digest that is not one is refused naming the field.
    let malformed = store
        .client
        .begin_job(keyed("digest-a", 3))
        .await
        .expect_err("not a digest");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("request_hash"),
        "{malformed:?}"
    );
}

#[tokio::test]
async fn a_batch_of_audit_rows_is_stored_at_once_and_a_malformed_one_is_named() {
    use chat_memory_proto::store::RecordAuditsRequest;
    use chat_memory_proto::v1::AuditEntry;
    let mut store = TestStore::start().await;
    let row = |id: String, action: &str| AuditEntry {
        audit_id: id,
        tenant: "t".into(),
        user: "u".into(),
        action: action.into(),
        chat_id: "c".into(),
        outcome: "OK".into(),
        ..Default::default()
    };
    let ids: Vec<String> = (0..3).map(|_| job_id()).collect();
    let entries: Vec<AuditEntry> = ids.iter().map(|id| row(id.clone(), "read")).collect();
    let stored = store
        .client
        .record_audits(RecordAuditsRequest {
            entries: entries.clone(),
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(stored.inserted, 3);
    // Relayed twice (a lost ack): nothing new.
    let again = store
        .client
        .record_audits(RecordAuditsRequest { entries })
        .await
        .expect("batch again")
        .into_inner();
    assert_eq!(again.inserted, 0);
    let bad = store
        .client
        .record_audits(RecordAuditsRequest {
            entries: vec![row(job_id(), "read"), row(job_id(), "not-an-action")],
        })
        .await
        .expect_err("malformed row");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("entries[1].action"), "{bad:?}");
}

#[tokio::test]
async fn a_batch_of_acceptances_answers_each_job_in_order_in_one_call() {
    use chat_memory_proto::store::{RecordAcceptedBatchRequest, RecordAcceptedResult};
    let mut store = TestStore::start().await;
    let (known, keyed, fresh_a, fresh_b, late) = (job_id(), job_id(), job_id(), job_id(), job_id());
    store
        .client
        .record_accepted(accepted(&known, "t/batch-a", 1))
        .await
        .expect("record");
    let keyed_request = |hash: &str| RecordAcceptedRequest {
        idempotency_key: "turn-1".into(),
        request_hash: hash.into(),
        ..accepted(&keyed, "t/batch-b", 1)
    };
    store
        .client
        .record_accepted(keyed_request(DIGEST_A))
        .await
        .expect("record");
    store
        .client
        .delete_chat(DeleteChatRequest {
            access: None,
            chat_id: "t/batch-c".into(),
            through_stream_seq: 5,
        })
        .await
        .expect("delete");

    let results = store
        .client
        .record_accepted_batch(RecordAcceptedBatchRequest {
            jobs: vec![
                accepted(&fresh_a, "t/batch-a", 2),
                accepted(&known, "t/batch-a", 7),
                keyed_request(DIGEST_B),
                accepted(&late, "t/batch-c", 4),
                accepted(&fresh_b, "t/batch-b", 2),
            ],
        })
        .await
        .expect("batch")
        .into_inner()
        .results;

    let result = |inserted, earlier_acceptance, key_reused| RecordAcceptedResult {
        inserted,
        earlier_acceptance,
        key_reused,
        ..Default::default()
    };
    assert_eq!(
        results,
        vec![
            result(true, false, false),
            result(false, true, false),
            result(false, false, true),
            result(false, false, false),
            result(true, false, false),
        ],
        "new, repeated beyond the duplicate window, key reused, chat deleted after it, new"
    );
    assert_eq!(store.job_state(&fresh_a).await.0, JobState::Queued);
    assert_eq!(store.job_state(&fresh_b).await.0, JobState::Queued);
    let gone = store
        .client
        .get_job(GetJobRequest {
            access: None,
            job_id: late.clone(),
        })
        .await;
    assert_eq!(
        gone.err().map(|s| s.code()),
        Some(Code::NotFound),
        "not recorded"
    );
}

#[tokio::test]
async fn a_malformed_job_of_a_batch_is_refused_alone_naming_its_place() {
    use chat_memory_proto::store::RecordAcceptedBatchRequest;
    let mut store = TestStore::start().await;
    let good = job_id();
    let results = store
        .client
        .record_accepted_batch(RecordAcceptedBatchRequest {
            jobs: vec![
                accepted(&good, "t/batch-d", 1),
                accepted("not-a-uuid", "t/batch-d", 2),
            ],
        })
        .await
        .expect("one call")
        .into_inner()
        .results;
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results[0].inserted && results[0].invalid.is_empty(),
        "{results:?}"
    );
    assert!(
        results[1].invalid.contains("jobs[1].job_id") && !results[1].inserted,
        "{results:?}"
    );
    assert_eq!(store.job_state(&good).await.0, JobState::Queued);
}

/// An acceptance's audit row rides in its job message: memory-store stores it
/// with the job's registration, or at the job's begin when the registration
/// never reached Postgres; a retried registration or begin adds no second
/// row, and a call that was not accepted with this message (a key reused, a
/// repeat from another message) leaves it out: the gateway audits those.
#[tokio::test]
async fn an_acceptances_audit_row_is_stored_once_with_its_registration_or_at_its_begin() {
    use chat_memory_proto::store::{BeginJobsRequest, QueryAuditRequest};
    use chat_memory_proto::v1::AuditEntry;
    let mut store = TestStore::start().await;
    let row = |job: &str, chat: &str| AuditEntry {
        audit_id: job_id(),
        at: Some(prost_types::Timestamp {
            seconds: 1_796_000_000,
            nanos: 0,
        }),
        tenant: "t".into(),
        user: "u".into(),
        action: "update".into(),
        chat_id: chat.into(),
        job_id: job.into(),
        outcome: "OK".into(),
        request_id: job_id(),
        ..Default::default()
    };
    let reader = store.client.clone();
    let rows_of = |audit: &AuditEntry| {
        let (mut client, id) = (reader.clone(), audit.audit_id.clone());
        async move {
            client
                .query_audit(QueryAuditRequest {
                    tenant: "t".into(),
                    filter: Some(chat_memory_proto::v1::QueryAuditRequest {
                        limit: 1000,
                        ..Default::default()
                    }),
                })
                .await
                .expect("audit")
                .into_inner()
                .entries
                .iter()
                .filter(|e| e.audit_id == id)
                .count()
        }
    };

    // Registered: stored with the registration; a retried registration and
    // the job's begin (which carries the same row) add nothing.
    let registered = job_id();
    let registered_row = row(&registered, "t/c");
    let with_row = |req: RecordAcceptedRequest, audit: &AuditEntry| RecordAcceptedRequest {
        audit: Some(audit.clone()),
        ..req
    };
    for _ in 0..2 {
        store
            .client
            .record_accepted(with_row(accepted(&registered, "t/c", 1), &registered_row))
            .await
            .expect("record");
    }
    assert_eq!(
        rows_of(&registered_row).await,
        1,
        "stored with the registration"
    );
    let carried = |job: &str, chat: &str, seq: u64, audit: &AuditEntry| BeginJobRequest {
        accept_audit: Some(audit.clone()),
        ..begin(job, chat, seq)
    };
    store
        .client
        .begin_jobs(BeginJobsRequest {
            chat_id: "t/c".into(),
            jobs: vec![carried(&registered, "t/c", 1, &registered_row)],
        })
        .await
        .expect("begin");
    assert_eq!(
        rows_of(&registered_row).await,
        1,
        "no second row at the begin"
    );

    // Never registered: stored when the job begins, once across redeliveries.
    let unregistered = job_id();
    let unregistered_row = row(&unregistered, "t/c");
    assert_eq!(rows_of(&unregistered_row).await, 0);
    for _ in 0..2 {
        store
            .client
            .begin_jobs(BeginJobsRequest {
                chat_id: "t/c".into(),
                jobs: vec![carried(&unregistered, "t/c", 2, &unregistered_row)],
            })
            .await
            .expect("begin");
    }
    assert_eq!(rows_of(&unregistered_row).await, 1, "stored at the begin");

    // Never registered, and the chat was deleted after the acceptance: the job
    // is skipped, its row is still stored.
    store
        .client
        .delete_chat(DeleteChatRequest {
            access: None,
            chat_id: "t/gone".into(),
            through_stream_seq: 9,
        })
        .await
        .expect("delete");
    let discarded = job_id();
    let discarded_row = row(&discarded, "t/gone");
    let begun = store
        .client
        .begin_job(carried(&discarded, "t/gone", 3, &discarded_row))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(begun.skip(), SkipReason::ChatDeleted, "{begun:?}");
    assert_eq!(
        rows_of(&discarded_row).await,
        1,
        "a skipped job's row is stored"
    );

    // A key reused with other messages: that call is refused (the gateway
    // audits the refusal), so the OK row it carried is not stored.
    let keyed = job_id();
    let keyed_request = |hash: &str, audit: &AuditEntry| RecordAcceptedRequest {
        idempotency_key: "turn-1".into(),
        request_hash: hash.into(),
        audit: Some(audit.clone()),
        ..accepted(&keyed, "t/k", 1)
    };
    let first_row = row(&keyed, "t/k");
    store
        .client
        .record_accepted(keyed_request(DIGEST_A, &first_row))
        .await
        .expect("record");
    let reused_row = row(&keyed, "t/k");
    let reused = store
        .client
        .record_accepted(keyed_request(DIGEST_B, &reused_row))
        .await;
    assert_eq!(
        reused.map(|_| ()).expect_err("reused").code(),
        Code::FailedPrecondition
    );
    // A repeat beyond the duplicate window (another message, same request):
    // answered as a repeat; the gateway audits it, not this registration.
    let repeat_row = row(&keyed, "t/k");
    let repeat = store
        .client
        .record_accepted(RecordAcceptedRequest {
            stream_seq: 5,
            ..keyed_request(DIGEST_A, &repeat_row)
        })
        .await
        .expect("repeat")
        .into_inner();
    assert!(repeat.earlier_acceptance, "{repeat:?}");
    assert_eq!(
        (
            rows_of(&first_row).await,
            rows_of(&reused_row).await,
            rows_of(&repeat_row).await
        ),
        (1, 0, 0)
    );

    // A carried row must be an `update` row, named by its field.
    let bad = store
        .client
        .record_accepted(with_row(
            accepted(&job_id(), "t/c", 7),
            &AuditEntry {
                action: "read".into(),
                ..row("", "t/c")
            },
        ))
        .await
        .expect_err("not an update row");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("audit.action"), "{bad:?}");
}
