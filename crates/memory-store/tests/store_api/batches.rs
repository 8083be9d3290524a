//! Coalesced batches and ownership at the store: BeginJobs decides per job in
//! one call, CommitJobs applies several jobs at one version and one call id,
//! ClaimChat (and ClaimChats, several at once) records the first owner, and a job of another chat is refused
//! naming `job_id`, with nothing written.

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

async fn assert_no_memory(store: &mut TestStore, chat: &str) {
    let read = store
        .client
        .get_memory(GetMemoryRequest {
            access: None,
            chat_id: chat.into(),
        })
        .await;
    assert_eq!(read.expect_err("no memory").code(), Code::NotFound);
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
    let result = |claimed, denied| ClaimChatResult { claimed, denied };
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
    let refused = store
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
        .expect_err("a claim without access");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("claims[1].access"),
        "{refused:?}"
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
        })
        .await
        .expect_err("a job of another chat");
    assert_eq!(commit.code(), Code::InvalidArgument);
    assert!(commit.message().contains("job_id"), "{}", commit.message());
    assert_no_memory(&mut store, "t/two").await;
    assert_eq!(store.job_state(&job).await.0, JobState::Queued);
}
