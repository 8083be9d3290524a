//! Another tenant, or another user without `memory:admin` or `memory:service`,
//! cannot read, update, delete or learn the existence of a chat; a
//! `memory:service` token acts for its tenant's users but cannot read the
//! audit log.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_token_reads_and_updates_its_tenants_chats_but_not_the_audit_log() {
    use chat_memory_proto::v1::QueryAuditRequest;
    let stack = TestStack::start().await;
    let mut owner = stack.gateway().await;
    let job = owner
        .update_memory(user_update("served", "My member ID is ISO-5151."))
        .await
        .unwrap_or_else(|s| panic!("owner update: {s:?}"))
        .into_inner()
        .job_id;
    stack.wait_job_done(&job, JOB_TIMEOUT).await;

    let mut service = stack
        .gateway_as(&auth::mint(auth::TENANT, "agent-svc", &["memory:service"]))
        .await;
    service
        .get_memory(get("served"))
        .await
        .expect("a service reads its tenant's chats");
    let update = service
        .update_memory(user_update("served", "My copay is $30."))
        .await
        .expect("and updates them")
        .into_inner();
    stack.wait_job_done(&update.job_id, JOB_TIMEOUT).await;
    let memory = service
        .get_memory(get("served"))
        .await
        .expect("read")
        .into_inner()
        .memory
        .expect("memory");
    assert_eq!(memory.version, 2);
    let audit = service
        .query_audit(QueryAuditRequest {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect_err("the audit log needs memory:admin");
    assert_eq!(audit.code(), Code::PermissionDenied, "{audit:?}");
    assert!(audit.message().contains("memory:admin"), "{audit:?}");
    // Other tenants stay invisible.
    let mut foreign = stack
        .gateway_as(&auth::mint("tenant-b", "agent-svc", &["memory:service"]))
        .await;
    let hidden = foreign
        .get_memory(get("served"))
        .await
        .expect_err("another tenant's service");
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    stack.shutdown().await;
}
