//! The watch streams' unit tests.

use super::*;
use crate::changes::ChangeFeed;
use chat_memory_proto::store::memory_store_client::MemoryStoreClient;
use chat_memory_proto::v1::Memory;

/// Reads whose store is never reached (the events below need no read).
fn reads(feed: ChangeFeed) -> Reads {
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    let token = service_kit::service_auth::AttachToken::new(None).expect("no token");
    let cache = Arc::new(crate::cache::MemoryCache::new(
        &crate::cache::ReadCacheSettings {
            capacity: 0,
            ttl_ms: 0,
            ..Default::default()
        },
    ));
    Reads::new(
        MemoryStoreClient::with_interceptor(channel, token),
        &service_kit::gather::BatchSettings::default(),
        feed,
        cache,
    )
}

fn version(v: i64) -> MemoryChanged {
    MemoryChanged {
        chat_id: "t/c".into(),
        memory: Some(Memory {
            version: v,
            ..Default::default()
        }),
        last_applied_job_id: format!("job-{v}"),
        ..Default::default()
    }
}

fn opened(feed: &ChangeFeed) -> Opened {
    Opened {
        slot: Some(Slot(Arc::new(AtomicUsize::new(1)))),
        chat: TenantChatId::new("t", "c").expect("valid"),
        access: Access {
            tenant: "t".into(),
            user: "u".into(),
            acts_for_tenant: false,
        },
        events: feed.listen("t/c"),
        last: 0,
        confirmed: true,
        first: None,
        superseded: false,
        from_version: 0,
    }
}

fn task(
    feed: &ChangeFeed,
    buffer: usize,
) -> (
    StreamTask,
    mpsc::Receiver<Result<WatchMemoryResponse, Status>>,
) {
    let (tx, rx) = mpsc::channel(buffer + 1);
    let task = StreamTask {
        reads: reads(feed.clone()),
        recheck: Duration::from_secs(3600),
        next_recheck: Instant::now() + Duration::from_secs(3600),
        tx,
        sent: 0,
        shutdown: CancellationToken::new(),
        queued: 0,
    };
    (task, rx)
}

#[tokio::test]
async fn consecutive_versions_are_forwarded_in_order_and_a_deletion_ends_the_stream() {
    let feed = ChangeFeed::new(16, None, None);
    let (mut task, mut rx) = task(&feed, 8);
    let opened = opened(&feed);
    for v in 1..=3 {
        feed.dispatch(version(v));
    }
    feed.dispatch(MemoryChanged {
        chat_id: "t/c".into(),
        deleted: true,
        ..Default::default()
    });
    let (sent, end) = task.run(opened).await;
    assert_eq!((sent, end), (4, End::Deleted));
    for v in 1..=3 {
        let event = rx.recv().await.expect("event").expect("ok");
        assert_eq!(event.memory.map(|m| m.version), Some(v));
        assert_eq!(event.last_applied_job_id, format!("job-{v}"));
    }
    assert!(rx.recv().await.expect("deletion").expect("ok").deleted);
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_its_buffer_then_resource_exhausted_naming_where_to_resume()
 {
    let feed = ChangeFeed::new(16, None, None);
    let (mut task, mut rx) = task(&feed, 2);
    let opened = opened(&feed);
    for v in 1..=5 {
        feed.dispatch(version(v));
    }
    let (sent, end) = task.run(opened).await;
    assert_eq!((sent, end), (2, End::TooSlow));
    for v in 1..=2 {
        let event = rx.recv().await.expect("event").expect("ok");
        assert_eq!(event.memory.map(|m| m.version), Some(v));
    }
    let status = rx
        .recv()
        .await
        .expect("final status")
        .expect_err("an error");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let reason = tonic_types::StatusExt::get_details_error_info(&status).map(|i| i.reason);
    assert_eq!(reason.as_deref(), Some("WATCH_CLIENT_TOO_SLOW"));
    assert!(
        status.message().contains("from_version=2"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn shutting_down_ends_a_stream_with_unavailable_naming_where_to_resume() {
    let feed = ChangeFeed::new(16, None, None);
    let (task, mut rx) = task(&feed, 8);
    let shutdown = task.shutdown.clone();
    let opened = opened(&feed);
    feed.dispatch(version(1));
    let running = tokio::spawn(async move {
        let mut task = task;
        task.run(opened).await
    });
    let first = rx.recv().await.expect("event").expect("ok");
    assert_eq!(first.memory.map(|m| m.version), Some(1));
    shutdown.cancel();
    let (_, end) = running.await.expect("task");
    assert_eq!(end, End::Shutdown);
    let status = rx
        .recv()
        .await
        .expect("final status")
        .expect_err("an error");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("from_version=1"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_stream_not_confirmed_for_its_caller_learns_nothing_of_a_deletion() {
    let feed = ChangeFeed::new(16, None, None);
    let (mut task, mut rx) = task(&feed, 8);
    let mut opened = opened(&feed);
    opened.confirmed = false;
    feed.dispatch(MemoryChanged {
        chat_id: "t/c".into(),
        deleted: true,
        ..Default::default()
    });
    // Next, a version: the read that would confirm it fails (no store
    // here), which ends the stream after the deletion was handled.
    feed.dispatch(version(1));
    let (sent, end) = task.run(opened).await;
    assert_eq!((sent, end), (0, End::StoreFailed));
    let status = rx
        .recv()
        .await
        .expect("the end's status")
        .expect_err("no deletion event before it");
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn a_stream_from_a_version_above_the_current_one_gets_the_deletion_and_ends() {
    let feed = ChangeFeed::new(16, None, None);
    let (mut task, mut rx) = task(&feed, 8);
    let mut opened = opened(&feed);
    opened.superseded = true;
    opened.last = 7;
    let (sent, end) = task.run(opened).await;
    assert_eq!((sent, end), (1, End::Deleted));
    assert!(rx.recv().await.expect("deletion").expect("ok").deleted);
}

#[tokio::test]
async fn the_versions_after_the_largest_one_are_not_an_overflow() {
    let feed = ChangeFeed::new(16, None, None);
    let (mut task, _rx) = task(&feed, 8);
    let mut opened = opened(&feed);
    opened.last = i64::MAX;
    feed.dispatch(version(i64::MIN));
    // Not the next version: confirmed by a read (which fails here).
    let (_, end) = task.run(opened).await;
    assert_eq!(end, End::StoreFailed);
}

#[tokio::test]
async fn the_client_stream_holds_its_slot_until_dropped_even_after_its_task_ended() {
    use futures::StreamExt as _;
    let open = Arc::new(AtomicUsize::new(1));
    let (tx, rx) = mpsc::channel(4);
    let mut stream = client_stream(rx, Some(Slot(open.clone())));
    tx.try_send(Ok(WatchMemoryResponse::default()))
        .expect("room");
    drop(tx); // the stream's task ended; one event is still buffered
    assert_eq!(open.load(Ordering::Relaxed), 1, "held while buffered");
    assert!(stream.next().await.is_some());
    assert!(stream.next().await.is_none());
    assert_eq!(open.load(Ordering::Relaxed), 1, "held until dropped");
    drop(stream);
    assert_eq!(open.load(Ordering::Relaxed), 0);
}

/// A version pushed from its commit carries the commit's pending count; one
/// from an older worker (no count) carries none; the deletion none.
#[tokio::test]
async fn an_event_carries_the_pending_count_its_commit_announced_and_none_when_unknown() {
    let feed = ChangeFeed::new(16, None, None);
    let (mut task, mut rx) = task(&feed, 8);
    let opened = opened(&feed);
    feed.dispatch(MemoryChanged {
        pending_jobs: Some(2),
        ..version(1)
    });
    feed.dispatch(version(2));
    feed.dispatch(MemoryChanged {
        chat_id: "t/c".into(),
        deleted: true,
        ..Default::default()
    });
    assert_eq!(task.run(opened).await, (3, End::Deleted));
    let first = rx.recv().await.expect("event").expect("ok");
    assert_eq!(
        first.freshness,
        Some(Freshness {
            last_applied_job_id: "job-1".into(),
            pending_jobs: 2,
        })
    );
    let second = rx.recv().await.expect("event").expect("ok");
    assert_eq!(
        second.freshness, None,
        "an older worker's commit: not known"
    );
    let deletion = rx.recv().await.expect("deletion").expect("ok");
    assert!(deletion.deleted && deletion.freshness.is_none());
}

/// A version read from the store carries what the read said.
#[test]
fn a_version_read_from_the_store_carries_the_reads_freshness() {
    let freshness = Freshness {
        last_applied_job_id: "job-7".into(),
        pending_jobs: 3,
    };
    let event = response(
        "c",
        store_pb::GetMemoryResponse {
            chat_id: "t/c".into(),
            memory: Some(Memory {
                version: 7,
                ..Default::default()
            }),
            freshness: Some(freshness.clone()),
            ..Default::default()
        },
    );
    assert_eq!(event.chat_id, "c");
    assert_eq!(event.last_applied_job_id, "job-7");
    assert_eq!(event.freshness, Some(freshness));
}
