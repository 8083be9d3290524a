//! GetMemories answers each read of a batch exactly as GetMemory answers it:
//! a memory (with its owner and pending count), NOT_FOUND for a chat the
//! caller may not see, NOT_FOUND marked absent for a chat without memory, and
//! a malformed read refused alone, naming `reads[i].field`.

use chat_memory_proto::store::{
    Access, ClaimChatRequest, GetMemoriesRequest, GetMemoryResult, get_memory_result::Result as R,
};

use super::*;

fn as_user(tenant: &str, user: &str) -> Option<Access> {
    Some(Access {
        tenant: tenant.into(),
        user: user.into(),
        acts_for_tenant: false,
    })
}

fn read(chat: &str, access: Option<Access>) -> GetMemoryRequest {
    GetMemoryRequest {
        chat_id: chat.into(),
        access,
    }
}

/// What GetMemory answers for `request`, in GetMemories' terms.
async fn single(store: &mut TestStore, request: GetMemoryRequest) -> R {
    match store.client.get_memory(request).await {
        Ok(answer) => R::Memory(answer.into_inner()),
        Err(s) if s.code() == Code::NotFound => {
            if s.metadata()
                .get(chat_memory_proto::store::ABSENT_METADATA)
                .is_some()
            {
                R::Absent(true)
            } else {
                R::NotFound(true)
            }
        }
        Err(s) if s.code() == Code::InvalidArgument => R::Invalid(s.message().to_owned()),
        Err(s) => panic!("GetMemory failed: {s}"),
    }
}

fn results(answer: Vec<GetMemoryResult>) -> Vec<R> {
    answer
        .into_iter()
        .map(|r| r.result.expect("every read has a result"))
        .collect()
}

#[tokio::test]
async fn get_memories_answers_each_read_as_get_memory_does_in_one_call() {
    let mut store = TestStore::start().await;
    for (chat, user) in [("t/a", "alice"), ("t/b", "bob")] {
        let claimed = store
            .client
            .claim_chat(ClaimChatRequest {
                chat_id: chat.into(),
                access: as_user("t", user),
            })
            .await
            .expect("claim");
        assert!(claimed.into_inner().claimed);
    }
    let first = job_id();
    store.apply(&first, "t/a", 1, "alice's chat").await;
    store.apply(&job_id(), "t/b", 2, "bob's chat").await;
    // A job accepted for t/a and not applied yet: its pending count is 1.
    store
        .client
        .record_accepted(accepted(&job_id(), "t/a", 3))
        .await
        .expect("record");

    let reads = vec![
        read("t/a", as_user("t", "alice")),
        read("t/b", as_user("t", "alice")),
        read("t/none", as_user("t", "alice")),
        read("", as_user("t", "alice")),
        read("t/a", as_user("u", "alice")),
        read("t/a", None),
        read("t/a", as_user("t", "alice")),
        read("t/b", as_user("", "bob")),
    ];
    let batch = store
        .client
        .get_memories(GetMemoriesRequest {
            reads: reads.clone(),
        })
        .await
        .expect("get memories")
        .into_inner();
    let batch = results(batch.results);
    assert_eq!(batch.len(), reads.len());

    match &batch[0] {
        R::Memory(m) => {
            assert_eq!(m.chat_id, "t/a");
            assert_eq!(m.owner_user, "alice");
            assert_eq!(m.memory.as_ref().map(|m| m.version), Some(1));
            let freshness = m.freshness.as_ref().expect("freshness");
            assert_eq!(freshness.pending_jobs, 1);
            assert_eq!(freshness.last_applied_job_id, first);
        }
        other => panic!("alice reads her chat, got {other:?}"),
    }
    assert_eq!(
        batch[1],
        R::NotFound(true),
        "bob's chat is hidden from alice"
    );
    assert_eq!(batch[2], R::Absent(true), "a chat without memory");
    assert_eq!(
        batch[3],
        R::Invalid("reads[3].chat_id: must not be empty".into())
    );
    assert_eq!(batch[4], R::NotFound(true), "another tenant's namespace");
    assert_eq!(
        batch[7],
        R::Invalid("reads[7].access.tenant: must be a non-empty tenant id".into())
    );
    // Each answer is GetMemory's own (a malformed read's reason without its place).
    for (i, request) in reads.into_iter().enumerate() {
        let alone = single(&mut store, request).await;
        let in_batch = match &batch[i] {
            R::Invalid(reason) => R::Invalid(
                reason
                    .strip_prefix(&format!("reads[{i}]."))
                    .expect("the reason names the read's place")
                    .to_owned(),
            ),
            other => other.clone(),
        };
        assert_eq!(in_batch, alone, "read {i}");
    }

    // A batch of one read, and an empty batch.
    let lone = store
        .client
        .get_memories(GetMemoriesRequest {
            reads: vec![read("t/b", as_user("t", "bob"))],
        })
        .await
        .expect("one read")
        .into_inner();
    let lone = results(lone.results);
    assert!(
        matches!(&lone[..], [R::Memory(m)] if m.owner_user == "bob"),
        "{lone:?}"
    );
    let none = store
        .client
        .get_memories(GetMemoriesRequest { reads: Vec::new() })
        .await
        .expect("no reads");
    assert!(none.into_inner().results.is_empty());
}
