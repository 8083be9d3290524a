//! One Postgres database per test: created (and migrated) on the server of
//! `CHAT_MEMORY_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`, over
//! loopback without TLS: `?sslmode=disable`; a URL given keeps its own query),
//! dropped when the test ends, and swept two hours later if a crashed run left
//! it behind. memory-store's API tests and the migration tests use it directly;
//! test-support's stacks through their own start-up.
//!
//! # Layout
//! - [`TestDatabase`]: the database; [`pg_server_url`], [`database_url`], [`unique_suffix`].

use std::sync::atomic::{AtomicBool, Ordering};

use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

/// Prefix of every test database's name (what the sweep looks for).
const PREFIX: &str = "cmt_";
/// Age after which a test database counts as left behind.
const STALE_SECS: u64 = 7200;

/// The Postgres server the tests use, without a database path or query: from
/// `CHAT_MEMORY_TEST_PG`, or the local default.
pub fn pg_server_url() -> String {
    let url = server_setting();
    let url = url.split('?').next().unwrap_or_default();
    // Keep `scheme://authority`, drop any database path.
    let authority = url.find("://").map_or(0, |i| i + 3);
    match url[authority..].find('/') {
        Some(slash) => url[..authority + slash].to_owned(),
        None => url.to_owned(),
    }
}

/// The URL of database `name` on the tests' server, with the server setting's
/// query. The local default connects without TLS: sqlx negotiates TLS whenever
/// the server offers it (Debian's Postgres does, `ssl = on`), and on loopback it
/// only costs CPU (docs/benchmarks.md measured it).
pub fn database_url(name: &str) -> String {
    let setting = server_setting();
    let query = match setting.split_once('?') {
        Some((_, query)) => format!("?{query}"),
        None if std::env::var("CHAT_MEMORY_TEST_PG").is_err() => "?sslmode=disable".to_owned(),
        None => String::new(),
    };
    format!("{}/{name}{query}", pg_server_url())
}

fn server_setting() -> String {
    std::env::var("CHAT_MEMORY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A name unique to this test: `<unix seconds>_<random>`; the time lets a later
/// run sweep what a crashed run left behind.
pub fn unique_suffix() -> String {
    format!("{}_{:08x}", now_secs(), rand::random::<u32>())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A database that exists for one test: dropped by [`TestDatabase::drop_now`]
/// or, at the latest, when the value is dropped (also when the test fails).
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    dropped: AtomicBool,
}

impl TestDatabase {
    /// Creates and migrates `cmt_<secs>_<random>`; first sweeps databases older
    /// than two hours that crashed runs left behind.
    ///
    /// # Panics
    /// When Postgres is unreachable: the test must fail, not pass without it.
    pub async fn create() -> Self {
        let database = Self::create_empty().await;
        let db = Database::connect(&database.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", database.url));
        migration::Migrator::up(&db, None)
            .await
            .unwrap_or_else(|e| panic!("migrations failed: {e}"));
        let _ = db.close().await;
        database
    }

    /// As [`TestDatabase::create`], without migrating (for a test of what an
    /// unmigrated schema does).
    ///
    /// # Panics
    /// When Postgres is unreachable.
    pub async fn create_empty() -> Self {
        let admin = admin().await;
        sweep(&admin).await;
        let name = format!("{PREFIX}{}", unique_suffix());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        let url = database_url(&name);
        Self {
            name,
            url,
            dropped: AtomicBool::new(false),
        }
    }

    /// Drops the database now (terminating leftover connections).
    pub async fn drop_now(&self) {
        if self.dropped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = drop_database(&self.name).await {
            eprintln!("warning: test database {} was not dropped: {e}", self.name);
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped.swap(true, Ordering::SeqCst) {
            return;
        }
        let name = self.name.clone();
        // Drop may run inside a runtime or outside one: a private runtime on a
        // thread of its own works in both.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_database(&name))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test database {} was not dropped: {e}", self.name),
            Err(_) => eprintln!("warning: test database {} was not dropped", self.name),
        }
    }
}

async fn drop_database(name: &str) -> Result<(), String> {
    let admin = Database::connect(database_url("postgres"))
        .await
        .map_err(|e| e.to_string())?;
    let result = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .map(drop)
        .map_err(|e| e.to_string());
    let _ = admin.close().await;
    result
}

async fn admin() -> DatabaseConnection {
    let url = database_url("postgres");
    Database::connect(&url).await.unwrap_or_else(|e| {
        panic!("Postgres at {url} is unreachable (start it with scripts/services.sh): {e}")
    })
}

/// Drops test databases older than [`STALE_SECS`]: what crashed runs left.
async fn sweep(admin: &DatabaseConnection) {
    let Ok(rows) = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!("SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'"),
        ))
        .await
    else {
        return;
    };
    let now = now_secs();
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|t| now.saturating_sub(t) > STALE_SECS) {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}
