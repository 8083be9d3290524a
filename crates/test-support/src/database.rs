//! One Postgres database per test (`test_db`, shared with memory-store's API
//! tests); a stack's start-up also sweeps the JetStream names crashed runs left.

pub use test_db::TestDatabase;

/// A migrated database for one stack, after sweeping stale test streams.
///
/// # Panics
/// When Postgres is unreachable.
pub async fn create() -> TestDatabase {
    crate::sweep_streams().await;
    TestDatabase::create().await
}
