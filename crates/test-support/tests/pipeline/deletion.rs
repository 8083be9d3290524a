//! Deleting a chat removes its memory and jobs, and a job still queued at the
//! deletion does not bring the chat back.

use tonic::Code;

use test_support::requests::{delete, get, memory, send, update, update_status, user};
use test_support::{StackOptions, TestStack};

use super::JOB_TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_removes_memory_and_jobs_and_discards_jobs_still_queued() {
    let mut stack = TestStack::start_with(StackOptions {
        workers: 1,
        ..StackOptions::default()
    })
    .await;
    let mut client = stack.gateway().await;
    let applied = send(
        &mut client,
        update("chat-del", vec![user("My member ID is DEL-1001.")]),
    )
    .await;
    stack.wait_job_done(&applied, JOB_TIMEOUT).await;

    // A job accepted while no worker runs is still queued when the chat is deleted.
    stack.kill_worker(0);
    let queued = send(
        &mut client,
        update("chat-del", vec![user("My group number is G-77.")]),
    )
    .await;
    let deleted = client
        .delete_memory(delete("chat-del"))
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.memory_deleted);
    assert_eq!(deleted.jobs_removed, 2);
    let s = client
        .get_memory(get("chat-del"))
        .await
        .expect_err("deleted");
    assert_eq!(s.code(), Code::NotFound);
    let s = client
        .get_update_status(update_status(&applied))
        .await
        .expect_err("deleted job");
    assert_eq!(s.code(), Code::NotFound);

    // The queued job must not resurrect the chat; a job accepted after the delete applies.
    stack.add_worker().await;
    let after = send(
        &mut client,
        update("chat-del", vec![user("My new member ID is DEL-2002.")]),
    )
    .await;
    let status = stack.wait_job_done(&after, JOB_TIMEOUT).await;
    assert_eq!(status.resulting_version, Some(1), "{status:?}");
    let m = memory(&mut client, "chat-del")
        .await
        .memory
        .expect("memory");
    assert!(
        !m.user_confirmed.contains("G-77"),
        "a job queued before the delete was applied: {}",
        m.user_confirmed
    );
    assert!(!m.user_confirmed.contains("DEL-1001"));
    let s = client
        .get_update_status(update_status(&queued))
        .await
        .expect_err("discarded job");
    assert_eq!(s.code(), Code::NotFound);
    stack.shutdown().await;
}
