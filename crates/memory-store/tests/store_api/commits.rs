//! Exactly-once application at the store: versions, redelivery, supersession,
//! concurrent commits, and the `apply` audit row written with the memory.

use super::*;

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

    let rows = store.apply_rows("tenant-x").await;
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

#[tokio::test]
async fn commit_jobs_batch_answers_each_commit_as_commit_jobs_does_in_one_call() {
    use chat_memory_proto::store::{
        CommitJobsBatchRequest, CommitJobsRequest, CommittedJob,
        commit_jobs_result::Result as Answer,
    };
    let mut store = TestStore::start().await;
    let (a, b) = (job_id(), job_id());
    for (job, chat, seq) in [(&a, "tenant-x/a", 1), (&b, "tenant-x/b", 2)] {
        store.record_and_begin(job, chat, seq).await;
    }
    let one = |job: &str, seq| CommittedJob {
        job_id: job.into(),
        stream_seq: seq,
        attempt: 1,
    };
    let request = |chat: &str, jobs, expected_version, trace: &str| CommitJobsRequest {
        chat_id: chat.into(),
        jobs,
        expected_version,
        content: Some(content(chat)),
        call_id: uuid::Uuid::now_v7().to_string(),
        trace_id: trace.into(),
    };
    let trace = "0123456789abcdef0123456789abcdef";
    let results = store
        .client
        .commit_jobs_batch(CommitJobsBatchRequest {
            commits: vec![
                // Applied, its audit row carrying its own trace.
                request("tenant-x/a", vec![one(&a, 1)], 0, trace),
                // The memory is not at version 3: nothing written.
                request("tenant-x/b", vec![one(&b, 2)], 3, ""),
                // a's job in another chat: refused alone.
                request("tenant-x/c", vec![one(&a, 1)], 0, ""),
            ],
        })
        .await
        .expect("one call")
        .into_inner()
        .results;
    let answers: Vec<_> = results
        .into_iter()
        .map(|r| match r.result {
            Some(Answer::Committed(c)) => Ok((
                CommitOutcome::try_from(c.outcome).unwrap_or(CommitOutcome::Unspecified),
                c.version,
            )),
            Some(Answer::Invalid(reason)) => Err(reason),
            None => Err("nothing".to_owned()),
        })
        .collect();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[0], Ok((CommitOutcome::Applied, 1)));
    assert_eq!(answers[1], Ok((CommitOutcome::VersionConflict, 0)));
    assert!(
        answers[2].as_ref().is_err_and(|r| r.contains("job_id")),
        "{answers:?}"
    );
    assert_eq!(store.version("tenant-x/a").await, 1);
    assert_eq!(store.job_state(&a).await.0, JobState::Succeeded);
    assert_eq!(
        store.job_state(&b).await.0,
        JobState::Running,
        "b untouched"
    );
    for chat in ["tenant-x/b", "tenant-x/c"] {
        assert_no_memory(&mut store, chat).await;
    }
    let rows = store.apply_rows("tenant-x").await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.chat_id.as_str(), r.job_id.as_str(), r.trace_id.as_str()))
            .collect::<Vec<_>>(),
        [("a", a.as_str(), trace)],
        "one apply row, with the commit's own trace"
    );

    // A malformed commit is refused alone, naming it; the others are written.
    let (d, e) = (job_id(), job_id());
    for (job, chat, seq) in [(&d, "tenant-x/d", 3), (&e, "tenant-x/e", 4)] {
        store.record_and_begin(job, chat, seq).await;
    }
    let results = store
        .client
        .commit_jobs_batch(CommitJobsBatchRequest {
            commits: vec![
                request("tenant-x/d", vec![one(&d, 3)], 0, "not-a-trace"),
                request("tenant-x/e", vec![one(&e, 4)], 0, ""),
            ],
        })
        .await
        .expect("one call")
        .into_inner()
        .results;
    match results.first().and_then(|r| r.result.as_ref()) {
        Some(Answer::Invalid(reason)) => assert!(
            reason.contains("commits[0]") && reason.contains("trace_id"),
            "{reason}"
        ),
        other => panic!("the malformed commit answered {other:?}"),
    }
    assert!(
        matches!(
            results.get(1).and_then(|r| r.result.as_ref()),
            Some(Answer::Committed(c)) if c.outcome == CommitOutcome::Applied as i32
        ),
        "{results:?}"
    );
    assert_eq!(
        store.job_state(&d).await.0,
        JobState::Running,
        "d untouched"
    );
    assert_no_memory(&mut store, "tenant-x/d").await;
    assert_eq!(store.version("tenant-x/e").await, 1);
}

impl TestStore {
    /// Registers `job` and begins it: a commit of it is expected next.
    async fn record_and_begin(&mut self, job: &str, chat: &str, seq: u64) {
        self.client
            .record_accepted(accepted(job, chat, seq))
            .await
            .expect("record");
        self.client
            .begin_job(begin(job, chat, seq))
            .await
            .expect("begin");
    }

    /// The tenant's `apply` audit rows.
    async fn apply_rows(&mut self, tenant: &str) -> Vec<chat_memory_proto::v1::AuditEntry> {
        self.client
            .query_audit(chat_memory_proto::store::QueryAuditRequest {
                tenant: tenant.into(),
                filter: Some(chat_memory_proto::v1::QueryAuditRequest {
                    action: "apply".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("query")
            .into_inner()
            .entries
    }
}

/// A commit answers the rest of `GetMemory`'s answer right after it (owner,
/// pending count) and the sequences that order it (applied through, pending), alone and in a
/// batch: what a gateway caches from the commit's change event.
#[tokio::test]
async fn a_commit_answers_what_get_memory_answers_right_after_it() {
    use chat_memory_proto::store::{
        Access, ClaimChatRequest, CommitJobsBatchRequest, CommitJobsRequest, CommittedJob,
        commit_jobs_result::Result as Answer,
    };
    let mut store = TestStore::start().await;
    store
        .client
        .claim_chat(ClaimChatRequest {
            chat_id: "tenant-x/owned".into(),
            access: Some(Access {
                tenant: "tenant-x".into(),
                user: "alice".into(),
                acts_for_tenant: false,
            }),
        })
        .await
        .expect("claim");
    let (first, second, third) = (job_id(), job_id(), job_id());
    store.record_and_begin(&first, "tenant-x/owned", 3).await;
    for (job, seq) in [(&second, 7), (&third, 9)] {
        store
            .client
            .record_accepted(accepted(job, "tenant-x/owned", seq))
            .await
            .expect("record");
    }
    let request = |chat: &str, job: &str, seq, expected_version| CommitJobsRequest {
        chat_id: chat.into(),
        jobs: vec![CommittedJob {
            job_id: job.into(),
            stream_seq: seq,
            attempt: 1,
        }],
        expected_version,
        content: Some(content(chat)),
        call_id: uuid::Uuid::now_v7().to_string(),
        trace_id: String::new(),
    };
    let read = |chat: &str| GetMemoryRequest {
        access: None,
        chat_id: chat.into(),
    };
    let alone = store
        .client
        .commit_jobs(request("tenant-x/owned", &first, 3, 0))
        .await
        .expect("commit")
        .into_inner();
    let after = store
        .client
        .get_memory(read("tenant-x/owned"))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(alone.owner_user, "alice");
    assert_eq!(alone.owner_user, after.owner_user);
    assert_eq!(alone.pending_jobs, Some(2));
    assert_eq!(alone.pending_jobs, after.freshness.map(|f| f.pending_jobs));
    assert_eq!(alone.applied_through_seq, 3);
    assert_eq!(alone.pending_seqs, vec![7, 9], "the jobs it counts");
    // An owned chat may expire (30 days after its owner's last activity).
    assert!(alone.expires_at.is_some());
    assert_eq!(alone.expires_at, after.expires_at);
    assert_eq!(alone.updated_at, after.memory.and_then(|m| m.updated_at));

    // In a batch: the second job of the owned chat beside an unowned chat's.
    let other = job_id();
    store
        .client
        .begin_job(begin(&second, "tenant-x/owned", 7))
        .await
        .expect("begin");
    store.record_and_begin(&other, "tenant-x/unowned", 11).await;
    let results = store
        .client
        .commit_jobs_batch(CommitJobsBatchRequest {
            commits: vec![
                request("tenant-x/owned", &second, 7, 1),
                request("tenant-x/unowned", &other, 11, 0),
                // Refused (stale version): it answers no view.
                request("tenant-x/owned", &third, 9, 0),
            ],
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    let views: Vec<_> = results
        .into_iter()
        .map(|r| match r.result {
            Some(Answer::Committed(c)) => (
                c.owner_user,
                c.pending_jobs,
                c.applied_through_seq,
                c.pending_seqs,
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        views,
        vec![
            ("alice".to_owned(), Some(1), 7, vec![9]),
            (String::new(), Some(0), 11, Vec::new()),
            (String::new(), None, 0, Vec::new()),
        ]
    );
    for (chat, pending) in [("tenant-x/owned", 1), ("tenant-x/unowned", 0)] {
        let after = store
            .client
            .get_memory(read(chat))
            .await
            .expect("read")
            .into_inner();
        assert_eq!(
            after.freshness.map(|f| f.pending_jobs),
            Some(pending),
            "{chat}"
        );
        // Without an owner the sweep never finds the chat.
        assert_eq!(
            after.expires_at.is_some(),
            chat == "tenant-x/owned",
            "{chat}"
        );
    }
}
