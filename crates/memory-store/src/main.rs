//! `memory-store`: loads settings, starts telemetry, binds, and calls [`memory_store::run`].

use std::process::ExitCode;

use clap::Parser;
use memory_store::{Settings, error::cause_chain};
use service_kit::settings::{CommonArgs, load, render};

#[derive(Debug, Parser)]
#[command(version, about = "chat-memory's store: the only owner of Postgres")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings: Settings = match load(cli.common.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("memory-store: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.common.print_config {
        println!("{}", render(&settings));
        return ExitCode::SUCCESS;
    }
    let _telemetry = match service_kit::telemetry::start("memory-store", &settings.telemetry).await
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("memory-store: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match tokio::net::TcpListener::bind(&settings.listen_addr).await {
        Ok(listener) => memory_store::run(settings, listener, service_kit::shutdown::signal())
            .await
            .map_err(|e| cause_chain(&e)),
        Err(e) => Err(format!("cannot listen on {}: {e}", settings.listen_addr)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            tracing::error!(error = %line, "memory-store failed");
            ExitCode::FAILURE
        }
    }
}
