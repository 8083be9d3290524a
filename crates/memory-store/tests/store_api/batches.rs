//! Coalesced batches and ownership at the store: BeginJobs decides per job in
//! one call (BeginJobsBatch, several chats at once, each as BeginJobs would),
//! CommitJobs applies several jobs at one version and one call id, ClaimChat
//! (and ClaimChats, several at once) records the first owner, and a job of
//! another chat is refused naming `job_id`, with nothing written.

use chat_memory_proto::store::{
    Access, BeginJobsRequest, ClaimChatRequest, CommitJobsRequest, CommittedJob,
};

use super::*;

fn owner(user: &str) -> Access {
    Access {
        tenant: "t".into(),
        user: user.into(),
        acts_for_tenant: false,
    }
}

fn begin_as(job: &str, seq: u64, access: Option<Access>) -> BeginJobRequest {
    BeginJobRequest {
        access,
        ..begin(job, "t/chat", seq)
    }
}

fn committed(job: &str, seq: u64) -> CommittedJob {
    CommittedJob {
        job_id: job.into(),
        stream_seq: seq,
        attempt: 1,
    }
}

fn skips(r: &chat_memory_proto::store::BeginJobsResponse) -> Vec<SkipReason> {
    r.skips
        .iter()
        .map(|s| SkipReason::try_from(*s).unwrap_or(SkipReason::Unspecified))
        .collect()
}

#[tokio::test]
async fn claim_chat_records_the_first_owner_and_hides_the_chat_from_other_users() {
    let mut store = TestStore::start().await;
    let claim = |chat: &str, access: Access| ClaimChatRequest {
        chat_id: chat.into(),
        access: Some(access),
    };
    let first = store
        .client
        .claim_chat(claim("t/chat", owner("alice")))
        .await;
    assert!(first.expect("first claim").into_inner().claimed);
    let again = store
        .client
        .claim_chat(claim("t/chat", owner("alice")))
        .await;
    assert!(!again.expect("owner again").into_inner().claimed);

    let other = store.client.claim_chat(claim("t/chat", owner("bob"))).await;
    assert_eq!(other.expect_err("another user").code(), Code::NotFound);
    let tenant_wide = Access {
        acts_for_tenant: true,
        ..owner("service")
    };
    let service = store.client.claim_chat(claim("t/chat", tenant_wide)).await;
    assert!(!service.expect("a tenant-wide caller").into_inner().claimed);
    let foreign = store
        .client
        .claim_chat(claim("u/chat", owner("alice")))
        .await;
    assert_eq!(
        foreign.expect_err("another namespace").code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn claim_chats_answers_each_claim_in_order_in_one_call() {
    use chat_memory_proto::store::{ClaimChatResult, ClaimChatsRequest};
    let mut store = TestStore::start().await;
    let claim = |chat: &str, access: Access| ClaimChatRequest {
        chat_id: chat.into(),
        access: Some(access),
    };
    store
        .client
        .claim_chat(claim("t/bobs", owner("bob")))
        .await
        .expect("bob owns t/bobs");
    let tenant_wide = Access {
        acts_for_tenant: true,
        ..owner("service")
    };
    let results = store
        .client
        .claim_chats(ClaimChatsRequest {
            claims: vec![
                claim("t/new", owner("alice")),
                claim("t/bobs", owner("alice")),
                claim("u/elsewhere", owner("alice")),
                claim("t/new", owner("alice")),
                claim("t/bobs", tenant_wide),
            ],
        })
        .await
        .expect("claims")
        .into_inner()
        .results;
    let result = |claimed, denied| ClaimChatResult {
        claimed,
        denied,
        ..Default::default()
    };
    assert_eq!(
        results,
        vec![
            result(true, false),
            result(false, true),
            result(false, true),
            result(false, false),
            result(false, false),
        ],
        "first owner, another's chat, another namespace, the owner again, a tenant-wide caller"
    );
    let bob = store.client.claim_chat(claim("t/new", owner("bob"))).await;
    assert_eq!(
        bob.expect_err("alice's claim was committed").code(),
        Code::NotFound
    );
    // A malformed claim is refused alone, naming its place; the other is claimed.
    let results = store
        .client
        .claim_chats(ClaimChatsRequest {
            claims: vec![
                claim("t/fine", owner("alice")),
                ClaimChatRequest {
                    chat_id: "t/no-access".into(),
                    access: None,
                },
            ],
        })
        .await
        .expect("one call")
        .into_inner()
        .results;
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0], result(true, false), "the good claim stands");
    assert!(
        results[1].invalid.contains("claims[1].access") && !results[1].claimed,
        "{results:?}"
    );
    let bob = store.client.claim_chat(claim("t/fine", owner("bob"))).await;
    assert_eq!(
        bob.expect_err("alice's claim was committed").code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn begin_jobs_decides_per_job_and_commit_jobs_applies_them_at_one_version() {
    let mut store = TestStore::start().await;
    let (a, b, c) = (job_id(), job_id(), job_id());
    for (job, seq) in [(&a, 1), (&b, 2), (&c, 3)] {
        store
            .client
            .record_accepted(accepted(job, "t/chat", seq))
            .await
            .expect("record");
    }
    assert_eq!(
        store.apply(&a, "t/chat", 1, "first").await.version,
        1,
        "a applies alone first"
    );

    let begun = store
        .client
        .begin_jobs(BeginJobsRequest {
            chat_id: "t/chat".into(),
            jobs: vec![
                begin_as(&a, 1, Some(owner("alice"))),
                begin_as(&b, 2, Some(owner("alice"))),
                begin_as(&c, 3, Some(owner("alice"))),
            ],
        })
        .await
        .expect("begin jobs")
        .into_inner();
    assert_eq!(
        skips(&begun),
        [
            SkipReason::AlreadyApplied,
            SkipReason::Unspecified,
            SkipReason::Unspecified
        ]
    );
    assert_eq!(begun.prior_version, 1);
    assert_eq!(
        begun.prior.map(|p| p.general_summary),
        Some("first".to_owned())
    );
    assert_eq!(store.job_state(&b).await.0, JobState::Running);

    let call = uuid::Uuid::now_v7().to_string();
    let done = store
        .client
        .commit_jobs(CommitJobsRequest {
            chat_id: "t/chat".into(),
            jobs: vec![committed(&b, 2), committed(&c, 3)],
            expected_version: 1,
            content: Some(content("both")),
            call_id: call.clone(),
            trace_id: String::new(),
        })
        .await
        .expect("commit jobs")
        .into_inner();
    assert_eq!(
        (CommitOutcome::try_from(done.outcome), done.version),
        (Ok(CommitOutcome::Applied), 2)
    );
    assert!(done.updated_at.is_some(), "an applied commit says when");
    for job in [&b, &c] {
        let row = store
            .client
            .get_job(GetJobRequest {
                access: None,
                job_id: job.clone(),
            })
            .await
            .expect("job")
            .into_inner();
        assert_eq!(
            (
                row.state,
                row.resulting_version,
                row.applied_in_call.as_str()
            ),
            (JobState::Succeeded as i32, Some(2), call.as_str())
        );
    }
    assert_eq!(store.version("t/chat").await, 2);

    // The same batch again changes nothing.
    let again = store
        .client
        .commit_jobs(CommitJobsRequest {
            chat_id: "t/chat".into(),
            jobs: vec![committed(&b, 2), committed(&c, 3)],
            expected_version: 2,
            content: Some(content("again")),
            call_id: uuid::Uuid::now_v7().to_string(),
            trace_id: String::new(),
        })
        .await
        .expect("commit again")
        .into_inner();
    assert_eq!(
        (CommitOutcome::try_from(again.outcome), again.version),
        (Ok(CommitOutcome::AlreadyApplied), 2)
    );
}

#[tokio::test]
async fn another_users_job_fails_as_not_owner_and_changes_no_memory() {
    let mut store = TestStore::start().await;
    let (mine, theirs) = (job_id(), job_id());
    store
        .client
        .record_accepted(accepted(&mine, "t/chat", 1))
        .await
        .expect("record mine");
    store
        .client
        .record_accepted(accepted(&theirs, "t/chat", 2))
        .await
        .expect("record theirs");
    let begun = store
        .client
        .begin_jobs(BeginJobsRequest {
            chat_id: "t/chat".into(),
            jobs: vec![
                begin_as(&mine, 1, Some(owner("alice"))),
                begin_as(&theirs, 2, Some(owner("bob"))),
            ],
        })
        .await
        .expect("begin jobs")
        .into_inner();
    assert_eq!(
        skips(&begun),
        [SkipReason::Unspecified, SkipReason::NotOwner],
        "the first job made alice the owner"
    );
    let (state, error) = store.job_state(&theirs).await;
    assert_eq!(state, JobState::Failed);
    assert!(error.contains("another user"), "{error}");
    assert_no_memory(&mut store, "t/chat").await;
}

#[tokio::test]
async fn a_job_id_of_another_chat_is_refused_naming_job_id_and_writes_nothing() {
    let mut store = TestStore::start().await;
    let job = job_id();
    store
        .client
        .record_accepted(accepted(&job, "t/one", 1))
        .await
        .expect("record");
    let begin = store
        .client
        .begin_jobs(BeginJobsRequest {
            chat_id: "t/two".into(),
            jobs: vec![BeginJobRequest {
                chat_id: "t/two".into(),
                ..begin(&job, "t/two", 1)
            }],
        })
        .await
        .expect_err("a job of another chat");
    assert_eq!(begin.code(), Code::InvalidArgument);
    assert!(begin.message().contains("job_id"), "{}", begin.message());
    let commit = store
        .client
        .commit_jobs(CommitJobsRequest {
            chat_id: "t/two".into(),
            jobs: vec![committed(&job, 1)],
            expected_version: 0,
            content: Some(content("stolen")),
            call_id: uuid::Uuid::now_v7().to_string(),
            trace_id: String::new(),
        })
        .await
        .expect_err("a job of another chat");
    assert_eq!(commit.code(), Code::InvalidArgument);
    assert!(commit.message().contains("job_id"), "{}", commit.message());
    assert_no_memory(&mut store, "t/two").await;
    assert_eq!(store.job_state(&job).await.0, JobState::Queued);
}

#[tokio::test]
async fn begin_jobs_batch_decides_each_chat_as_begin_jobs_does_in_one_call() {
    use chat_memory_proto::store::{BeginJobsBatchRequest, begin_jobs_result::Result as Begun};
    let mut store = TestStore::start().await;
    let (first, second, fresh, stolen) = (job_id(), job_id(), job_id(), job_id());
    store.apply(&first, "t/known", 1, "before").await;
    store
        .client
        .record_accepted(accepted(&stolen, "t/known", 5))
        .await
        .expect("record");
    let one = |chat: &str, job: &str, seq: u64| BeginJobsRequest {
        chat_id: chat.into(),
        jobs: vec![begin(job, chat, seq)],
    };

    let results = store
        .client
        .begin_jobs_batch(BeginJobsBatchRequest {
            chats: vec![
                one("t/known", &second, 2),
                one("t/new", &fresh, 1),
                // A job id `t/known` already uses: this chat alone is refused.
                one("t/thief", &stolen, 1),
            ],
        })
        .await
        .expect("batch")
        .into_inner()
        .results;

    assert_eq!(results.len(), 3, "{results:?}");
    let Some(Begun::Begun(known)) = &results[0].result else {
        panic!("t/known begun: {results:?}");
    };
    assert_eq!(skips(known), [SkipReason::Unspecified]);
    assert_eq!(known.prior_version, 1);
    assert_eq!(
        known.prior.as_ref().map(|p| p.general_summary.as_str()),
        Some("before")
    );
    let Some(Begun::Begun(new)) = &results[1].result else {
        panic!("t/new begun: {results:?}");
    };
    assert_eq!(
        (skips(new), new.prior_version, new.prior.is_none()),
        (vec![SkipReason::Unspecified], 0, true)
    );
    let Some(Begun::Invalid(reason)) = &results[2].result else {
        panic!("t/thief refused: {results:?}");
    };
    assert!(reason.contains("job_id"), "{reason}");
    assert_eq!(store.job_state(&second).await.0, JobState::Running);
    assert_eq!(store.job_state(&fresh).await.0, JobState::Running);
    let stolen_job = store
        .client
        .get_job(GetJobRequest {
            access: None,
            job_id: stolen,
        })
        .await
        .expect("job")
        .into_inner();
    assert_eq!(
        (stolen_job.chat_id.as_str(), stolen_job.state),
        ("t/known", JobState::Queued as i32),
        "the refused chat wrote nothing"
    );

    // A malformed chat is refused alone, naming its place; the other is begun.
    let fine = job_id();
    store
        .client
        .record_accepted(accepted(&fine, "t/fine", 1))
        .await
        .expect("record");
    let results = store
        .client
        .begin_jobs_batch(BeginJobsBatchRequest {
            chats: vec![
                one("t/fine", &fine, 1),
                BeginJobsRequest {
                    chat_id: "t/empty".into(),
                    jobs: Vec::new(),
                },
            ],
        })
        .await
        .expect("one call")
        .into_inner()
        .results;
    use chat_memory_proto::store::begin_jobs_result::Result as Answer;
    assert!(
        matches!(&results[0].result, Some(Answer::Begun(_))),
        "{results:?}"
    );
    assert!(
        matches!(&results[1].result, Some(Answer::Invalid(reason)) if reason.contains("chats[1].jobs")),
        "{results:?}"
    );
    assert_eq!(results.len(), 2);
    assert_eq!(store.job_state(&fine).await.0, JobState::Running);
}

/// `chat_memory_begin_jobs` relaxes its commit when it wrote only `running`
/// states; in a batch that must never relax another chat's durable write,
/// whatever the order.
#[tokio::test]
async fn a_batched_begin_keeps_the_commit_durable_when_any_chat_needs_it() {
    use sea_orm::{ConnectionTrait, Database, Statement, TransactionTrait};
    let mut store = TestStore::start().await;
    store
        .client
        .claim_chat(ClaimChatRequest {
            chat_id: "t/bobs".into(),
            access: Some(owner("bob")),
        })
        .await
        .expect("bob owns t/bobs");
    let db = Database::connect(store.db_url()).await.expect("connect");
    // Only a `running` state: relaxed. Alice's job on bob's chat: a durable
    // FAILED record.
    let running = |chat: &str| {
        format!(
            r#"{{"chat": "{chat}", "jobs": [{{"job": "{}", "seq": 1, "count": 1,
                "accepted_at": "2026-12-06T00:00:00Z", "attempt": 1, "replay": false,
                "access": null}}]}}"#,
            uuid::Uuid::new_v4()
        )
    };
    let not_owner = format!(
        r#"{{"chat": "t/bobs", "jobs": [{{"job": "{}", "seq": 1, "count": 1,
            "accepted_at": "2026-12-06T00:00:00Z", "attempt": 1, "replay": false,
            "access": {{"tenant": "t", "user": "alice", "acts_for_tenant": false,
                        "in_namespace": true}}}}]}}"#,
        uuid::Uuid::new_v4()
    );
    let cases = [
        (vec![running("t/a"), running("t/b")], "off"),
        (vec![running("t/a"), not_owner.clone()], "on"),
        (vec![not_owner.clone(), running("t/b")], "on"),
    ];
    for (chats, expected) in cases {
        let txn = db.begin().await.expect("begin");
        let rows = txn
            .query_all_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!(
                    "SELECT idx, problem FROM chat_memory_begin_jobs_batch('[{}]'::jsonb, 'not owner', 'superseded')",
                    chats.join(",")
                ),
            ))
            .await
            .expect("batch");
        assert_eq!(rows.len(), 2);
        let setting = txn
            .query_one_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT current_setting('synchronous_commit') AS s",
            ))
            .await
            .expect("setting")
            .expect("a row");
        let value: String = setting.try_get("", "s").expect("text");
        assert_eq!(value, expected, "{chats:?}");
        txn.rollback().await.expect("rollback");
    }
    db.close().await.expect("close");
}

/// A batch of one goes to the single functions (cheaper than the batch
/// functions' set-up); its answers must be those of a batch of many: a
/// per-item verdict, never an error for the whole call.
#[tokio::test]
async fn a_batch_of_one_answers_each_verdict_as_a_larger_batch_does() {
    use chat_memory_proto::store::{
        BeginJobsBatchRequest, BeginJobsResult, ClaimChatResult, ClaimChatsRequest,
        RecordAcceptedBatchRequest, RecordAcceptedResult, begin_jobs_result::Result as Begun,
    };
    let mut store = TestStore::start().await;
    let claim = |chat: &str, user: &str| ClaimChatsRequest {
        claims: vec![ClaimChatRequest {
            chat_id: chat.into(),
            access: Some(owner(user)),
        }],
    };
    let claimed = |req| {
        let mut client = store.client.clone();
        async move {
            client
                .claim_chats(req)
                .await
                .expect("claims")
                .into_inner()
                .results
        }
    };
    let result = |claimed, denied| ClaimChatResult {
        claimed,
        denied,
        ..Default::default()
    };
    assert_eq!(
        claimed(claim("t/one", "alice")).await,
        [result(true, false)]
    );
    assert_eq!(
        claimed(claim("t/one", "alice")).await,
        [result(false, false)]
    );
    assert_eq!(claimed(claim("t/one", "bob")).await, [result(false, true)]);
    assert_eq!(
        claimed(claim("u/one", "alice")).await,
        [result(false, true)],
        "another namespace"
    );

    let keyed = job_id();
    let keyed_request = |hash: &str| RecordAcceptedRequest {
        idempotency_key: "turn-1".into(),
        request_hash: hash.into(),
        ..accepted(&keyed, "t/one", 1)
    };
    let recorded = |req: RecordAcceptedRequest| {
        let mut client = store.client.clone();
        async move {
            client
                .record_accepted_batch(RecordAcceptedBatchRequest { jobs: vec![req] })
                .await
                .expect("batch")
                .into_inner()
                .results
        }
    };
    let record = |inserted, earlier_acceptance, key_reused| RecordAcceptedResult {
        inserted,
        earlier_acceptance,
        key_reused,
        ..Default::default()
    };
    assert_eq!(
        recorded(keyed_request(DIGEST_A)).await,
        [record(true, false, false)]
    );
    assert_eq!(
        recorded(keyed_request(DIGEST_B)).await,
        [record(false, false, true)],
        "a key reused with other messages is this job's answer, not the call's error"
    );

    let begun = store
        .client
        .begin_jobs_batch(BeginJobsBatchRequest {
            chats: vec![BeginJobsRequest {
                chat_id: "t/thief".into(),
                jobs: vec![begin(&keyed, "t/thief", 1)],
            }],
        })
        .await
        .expect("a job of another chat is this chat's answer")
        .into_inner()
        .results;
    let [
        BeginJobsResult {
            result: Some(Begun::Invalid(reason)),
        },
    ] = &begun[..]
    else {
        panic!("t/thief refused: {begun:?}");
    };
    assert!(reason.contains("job_id"), "{reason}");
    let fresh = job_id();
    let begun = store
        .client
        .begin_jobs_batch(BeginJobsBatchRequest {
            chats: vec![BeginJobsRequest {
                chat_id: "t/one".into(),
                jobs: vec![begin(&keyed, "t/one", 1), begin(&fresh, "t/one", 2)],
            }],
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    let [
        BeginJobsResult {
            result: Some(Begun::Begun(one)),
        },
    ] = &begun[..]
    else {
        panic!("t/one begun: {begun:?}");
    };
    assert_eq!(
        skips(one),
        [SkipReason::Unspecified, SkipReason::Unspecified]
    );
    assert_eq!(store.job_state(&fresh).await.0, JobState::Running);
}

/// Messages of one job id begun in one call (a repeat or a reuse published past
/// the duplicate window, queued behind the first): the first decides, a reuse
/// is KEY_REUSED, a repeat is not run twice; only the registered job keeps a
/// digest, and the message matching the registered digest runs.
#[tokio::test]
async fn messages_of_one_job_id_in_one_begin_run_once_and_a_reuse_among_them_is_skipped() {
    let mut store = TestStore::start().await;
    let keyed = |job: &str, hash: &str, seq: u64| BeginJobRequest {
        request_hash: hash.into(),
        ..begin(job, "t/chat", seq)
    };
    let job = job_id();
    let begun = store
        .client
        .begin_jobs(BeginJobsRequest {
            chat_id: "t/chat".into(),
            jobs: vec![
                keyed(&job, DIGEST_A, 1),
                keyed(&job, DIGEST_B, 2),
                keyed(&job, DIGEST_A, 3),
            ],
        })
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(
        skips(&begun),
        vec![
            SkipReason::Unspecified,
            SkipReason::KeyReused,
            SkipReason::AlreadyApplied
        ]
    );
    // The job kept the first message's digest, not the reuse's.
    let reuse = RecordAcceptedRequest {
        idempotency_key: "k".into(),
        request_hash: DIGEST_B.into(),
        ..accepted(&job, "t/chat", 4)
    };
    let refused = store
        .client
        .record_accepted(reuse)
        .await
        .expect_err("the reuse's digest");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // The edge DEBT D-20 names: memory-store was down at the first acceptance,
    // up at the reuse's (past the window), so the row holds the reuse's
    // digest. The first message is the one skipped, and the job still runs
    // once, from the reuse: neither is dropped unseen, nor is the job stuck.
    let other = job_id();
    store
        .client
        .record_accepted(RecordAcceptedRequest {
            idempotency_key: "k2".into(),
            request_hash: DIGEST_B.into(),
            ..accepted(&other, "t/other", 2)
        })
        .await
        .expect("registered");
    let begun = store
        .client
        .begin_jobs(BeginJobsRequest {
            chat_id: "t/other".into(),
            jobs: vec![
                BeginJobRequest {
                    request_hash: DIGEST_A.into(),
                    ..begin(&other, "t/other", 1)
                },
                BeginJobRequest {
                    request_hash: DIGEST_B.into(),
                    ..begin(&other, "t/other", 2)
                },
            ],
        })
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(
        skips(&begun),
        vec![SkipReason::KeyReused, SkipReason::Unspecified]
    );
}
