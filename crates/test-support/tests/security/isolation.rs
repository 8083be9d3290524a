//! Another tenant, or another user without `memory:admin`, cannot read, update,
//! delete or learn the existence of a chat.

use tonic::Code;

use test_support::TestStack;
use test_support::auth;
use test_support::requests::{delete, get, update_status, user_update};

use super::{JOB_TIMEOUT, RW};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenant_or_user_cannot_read_update_delete_or_see_status_of_a_chat() {
    let stack = TestStack::start().await;
    let mut owner = stack.gateway().await;
    let job = owner
        .update_memory(user_update("shared", "My member ID is ISO-4242."))
        .await
        .unwrap_or_else(|s| panic!("owner update: {s:?}"))
        .into_inner()
        .job_id;
    stack.wait_job_done(&job, JOB_TIMEOUT).await;

    let mut other_tenant = stack
        .gateway_as(&auth::mint("tenant-b", auth::USER, RW))
        .await;
    let mut other_user = stack
        .gateway_as(&auth::mint(auth::TENANT, "user-2", RW))
        .await;
    for (who, client) in [
        ("other tenant", &mut other_tenant),
        ("other user", &mut other_user),
    ] {
        let s = client.get_memory(get("shared")).await.expect_err("read");
        assert_eq!(s.code(), Code::NotFound, "{who} read: {s:?}");
        let s = client
            .get_update_status(update_status(&job))
            .await
            .expect_err("status");
        assert_eq!(s.code(), Code::NotFound, "{who} status: {s:?}");
    }
    // Same-tenant user: the chat exists but is not theirs: NOT_FOUND, never PERMISSION_DENIED.
    let s = other_user
        .update_memory(user_update("shared", "overwrite"))
        .await
        .expect_err("update");
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = other_user
        .delete_memory(delete("shared"))
        .await
        .expect_err("delete");
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    // Another tenant's "shared" is another chat: its delete and update touch nothing of ours.
    let deleted = other_tenant
        .delete_memory(delete("shared"))
        .await
        .unwrap_or_else(|s| panic!("other tenant delete: {s:?}"))
        .into_inner();
    assert!(!deleted.memory_deleted);
    let theirs = other_tenant
        .update_memory(user_update("shared", "My member ID is OTHER-1."))
        .await
        .unwrap_or_else(|s| panic!("other tenant update: {s:?}"))
        .into_inner()
        .job_id;
    let s = owner
        .get_update_status(update_status(&theirs))
        .await
        .expect_err("their job");
    assert_eq!(s.code(), Code::NotFound);
    let mine = owner
        .get_memory(get("shared"))
        .await
        .expect("owner read")
        .into_inner();
    let memory = mine.memory.expect("memory");
    assert_eq!(mine.chat_id, "shared");
    assert_eq!(memory.version, 1);
    assert!(memory.user_confirmed.contains("ISO-4242"));
    assert!(!memory.user_confirmed.contains("OTHER-1"));
    // An admin acts for the whole tenant.
    let mut admin = stack
        .gateway_as(&auth::mint(auth::TENANT, "ops", &["memory:admin"]))
        .await;
    admin
        .get_memory(get("shared"))
        .await
        .expect("admin reads any chat of its tenant");
    stack.shutdown().await;
}
