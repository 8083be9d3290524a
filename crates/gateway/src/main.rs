//! `gateway`: loads settings, starts telemetry, binds the listener and serves.

use std::process::ExitCode;

use clap::Parser;
use gateway::Settings;
use service_kit::settings::{self, CommonArgs};

#[derive(Parser)]
#[command(name = "gateway", about = "chat-memory public gRPC API", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings: Settings = match settings::load(args.common.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.common.print_config {
        println!("{}", settings::render(&settings));
        return ExitCode::SUCCESS;
    }
    let _telemetry = match service_kit::telemetry::start("gateway", &settings.telemetry).await {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&settings.listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %settings.listen_addr, error = %e, "cannot bind listen_addr");
            return ExitCode::FAILURE;
        }
    };
    match gateway::run(settings, listener, service_kit::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway stopped with an error");
            ExitCode::FAILURE
        }
    }
}
