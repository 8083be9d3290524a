//! `chat-memory-migrate`: creates memory-store's database if needed and applies
//! pending migrations. Run once per release (a Kubernetes Job), never by replicas.
//! `status` lists them; `down --steps N` rolls back the last N (a release's
//! rollback, after a backup).

use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr, Statement};

#[derive(Debug, Parser)]
#[command(version, about = "Apply memory-store's Postgres migrations")]
struct Cli {
    /// Postgres URL of memory-store's database; created if it does not exist.
    #[arg(
        long,
        global = true,
        env = "CHAT_MEMORY__DATABASE__URL",
        default_value = "postgres://postgres@127.0.0.1:5432/chat_memory"
    )]
    database_url: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Command {
    /// Create the database if missing and apply every pending migration (the default).
    Up,
    /// Print each migration and whether it is applied.
    Status,
    /// Roll back the last `steps` applied migrations (a release's rollback:
    /// runbooks/maintenance.md). Take a backup first (scripts/ops/backup.sh).
    Down {
        #[arg(long)]
        steps: u32,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-memory-migrate: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), DbErr> {
    match cli.command.unwrap_or(Command::Up) {
        Command::Up => {
            ensure_database(&cli.database_url).await?;
            let db = Database::connect(cli.database_url.as_str()).await?;
            let pending: Vec<String> = Migrator::get_pending_migrations(&db)
                .await?
                .iter()
                .map(|m| m.name().to_owned())
                .collect();
            Migrator::up(&db, None).await?;
            for m in Migrator::get_migration_with_status(&db).await? {
                let verb = if pending.iter().any(|p| p == m.name()) {
                    "applied"
                } else {
                    "already applied"
                };
                println!("{}: {verb}", m.name());
            }
            db.close().await
        }
        Command::Down { steps } => {
            if steps == 0 {
                return Err(DbErr::Custom("down --steps must be at least 1".to_owned()));
            }
            let db = Database::connect(cli.database_url.as_str()).await?;
            let applied: Vec<String> = Migrator::get_applied_migrations(&db)
                .await?
                .iter()
                .map(|m| m.name().to_owned())
                .collect();
            Migrator::down(&db, Some(steps)).await?;
            for name in applied.iter().rev().take(steps as usize) {
                println!("{name}: rolled back");
            }
            db.close().await
        }
        Command::Status => {
            let db = Database::connect(cli.database_url.as_str()).await?;
            for m in Migrator::get_migration_with_status_read_only(&db).await? {
                println!("{}: {}", m.name(), m.status());
            }
            db.close().await
        }
    }
}

/// Creates the database named in `url` when it is missing, through the
/// `postgres` maintenance database of the same server.
async fn ensure_database(url: &str) -> Result<(), DbErr> {
    let (maintenance_url, name) = split_database_url(url)
        .ok_or_else(|| DbErr::Custom(format!("database url has no database name: {url}")))?;
    let admin = Database::connect(maintenance_url.as_str()).await?;
    let result = create_if_missing(&admin, &name).await;
    admin.close().await?;
    result
}

async fn create_if_missing(admin: &DatabaseConnection, name: &str) -> Result<(), DbErr> {
    if database_exists(admin, name).await? {
        return Ok(());
    }
    let quoted = name.replace('"', "\"\"");
    if let Err(e) = admin
        .execute_unprepared(&format!("CREATE DATABASE \"{quoted}\""))
        .await
    {
        // Another migrator may have created it between the check and the create.
        if !database_exists(admin, name).await? {
            return Err(e);
        }
    } else {
        println!("created database {name}");
    }
    Ok(())
}

async fn database_exists(admin: &DatabaseConnection, name: &str) -> Result<bool, DbErr> {
    let stmt = Statement::from_sql_and_values(
        admin.get_database_backend(),
        "SELECT 1 FROM pg_database WHERE datname = $1",
        [name.into()],
    );
    Ok(admin.query_one_raw(stmt).await?.is_some())
}

/// Splits `postgres://user@host:port/db?opts` into the same URL pointing at the
/// `postgres` database, and `db`. `None` when the URL names no database.
fn split_database_url(url: &str) -> Option<(String, String)> {
    let after_scheme = url.find("://")? + 3;
    let slash = after_scheme + url[after_scheme..].find('/')?;
    let (path, query) = match url[slash + 1..].find('?') {
        Some(q) => (&url[slash + 1..slash + 1 + q], &url[slash + 1 + q..]),
        None => (&url[slash + 1..], ""),
    };
    if path.is_empty() {
        return None;
    }
    Some((
        format!("{}/postgres{query}", &url[..slash]),
        path.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::split_database_url;

    #[test]
    fn the_maintenance_url_keeps_host_and_options() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/chat_memory",
                Some(("postgres://postgres@127.0.0.1:5432/postgres", "chat_memory")),
            ),
            (
                "postgres://u:p@db:5432/cm?sslmode=disable",
                Some(("postgres://u:p@db:5432/postgres?sslmode=disable", "cm")),
            ),
            ("postgres://db:5432/", None),
            ("postgres://db:5432", None),
        ];
        for (url, want) in cases {
            let got = split_database_url(url);
            let want = want.map(|(u, d)| (u.to_owned(), d.to_owned()));
            assert_eq!(got, want, "{url}");
        }
    }
}
