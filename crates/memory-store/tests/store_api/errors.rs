//! NOT_FOUND without details, and INVALID_ARGUMENT naming the field.

use super::*;

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
