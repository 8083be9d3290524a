//! Health, and failing fast on an unreachable or unmigrated database.

use super::*;

#[tokio::test]
async fn health_is_serving_for_the_server_and_the_store_service() {
    let store = TestStore::start().await;
    let mut health = HealthClient::new(store.channel.clone());

    for service in ["", "chatmemory.store.v1.MemoryStore"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner();
        assert_eq!(
            ServingStatus::try_from(r.status).ok(),
            Some(ServingStatus::Serving),
            "{service:?}"
        );
    }
    assert!(store.stop().await.is_ok(), "run returns Ok after shutdown");
}

#[tokio::test]
async fn run_with_an_unreachable_database_fails_fast_with_database_unavailable() {
    let mut settings = Settings::default();
    settings.database.url = "postgres://postgres@127.0.0.1:1/chat_memory".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let started = Instant::now();

    let result = tokio::time::timeout(
        Duration::from_secs(10),
        memory_store::run(settings, listener, std::future::pending()),
    )
    .await
    .expect("run gives up by itself");

    assert!(
        matches!(result, Err(StoreError::DatabaseUnavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn run_against_an_unmigrated_database_is_schema_not_migrated() {
    let db = TestDatabase::create_empty().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");

    let result = tokio::time::timeout(
        Duration::from_secs(10),
        memory_store::run(settings(&db), listener, std::future::pending()),
    )
    .await
    .expect("run gives up by itself");

    match result {
        Err(e @ StoreError::SchemaNotMigrated { .. }) => {
            assert!(e.to_string().contains("chat-memory-migrate up"), "{e}");
        }
        other => panic!("expected SchemaNotMigrated, got {other:?}"),
    }
}
