//! One Postgres database per test.

use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

/// A migrated database that exists for one test.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

const PREFIX: &str = "cmt_";

impl TestDatabase {
    /// Creates and migrates `cmt_<secs>_<random>`; first sweeps databases older
    /// than two hours that crashed runs left behind.
    ///
    /// # Panics
    /// When Postgres is unreachable: the test must fail, not pass without it.
    pub async fn create() -> Self {
        let admin = admin().await;
        sweep(&admin).await;
        crate::sweep_streams().await;
        let name = format!("{PREFIX}{}", crate::unique_suffix());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = format!("{}/{name}", crate::pg_server_url());
        let db = Database::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        migration::Migrator::up(&db, None)
            .await
            .unwrap_or_else(|e| panic!("migrations failed: {e}"));
        let _ = db.close().await;
        Self { name, url }
    }

    /// Drops the database (terminating leftover connections).
    pub async fn drop_now(&self) {
        let admin = admin().await;
        if let Err(e) = admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
        {
            tracing::warn!(db = %self.name, error = %e, "could not drop test database");
        }
    }
}

async fn admin() -> DatabaseConnection {
    let url = format!("{}/postgres", crate::pg_server_url());
    Database::connect(&url).await.unwrap_or_else(|e| {
        panic!("Postgres at {url} is unreachable (start it with scripts/services.sh): {e}")
    })
}

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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|t| now.saturating_sub(t) > 7200) {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}
