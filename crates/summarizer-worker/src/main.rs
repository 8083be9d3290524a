//! `summarizer-worker`: loads settings, starts telemetry, binds the health listener and runs.

use std::process::ExitCode;

use clap::Parser;
use service_kit::settings::{self, CommonArgs};
use summarizer_worker::Settings;

#[derive(Parser)]
#[command(
    name = "summarizer-worker",
    about = "chat-memory update job worker",
    version
)]
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
            eprintln!("summarizer-worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.common.print_config {
        println!("{}", settings::render(&settings));
        return ExitCode::SUCCESS;
    }
    let _telemetry =
        match service_kit::telemetry::start("summarizer-worker", &settings.telemetry).await {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("summarizer-worker: {e}");
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
    match summarizer_worker::run(settings, listener, service_kit::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "summarizer-worker stopped with an error");
            ExitCode::FAILURE
        }
    }
}
