//! `summarizer-agent`: serves the `summarize` MCP tool and gRPC health.

use clap::Parser;
use service_kit::settings::CommonArgs;
use summarizer_agent::{AgentError, settings::Settings};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "MCP server turning chat messages into layered memory"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() {
    if let Err(line) = start(Args::parse()).await {
        eprintln!("summarizer-agent: {line}");
        std::process::exit(1);
    }
}

/// Everything `main` does; errors come back as one line for the operator.
async fn start(args: Args) -> Result<(), String> {
    let settings: Settings =
        service_kit::settings::load(args.common.config.as_deref()).map_err(|e| e.to_string())?;
    if args.common.print_config {
        println!("{}", service_kit::settings::render(&settings));
        return Ok(());
    }
    let _telemetry = service_kit::telemetry::start("summarizer-agent", &settings.telemetry).await?;
    let listener = match tokio::net::TcpListener::bind(&settings.listen_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(addr = %settings.listen_addr, error = %e, "cannot bind listener");
            return Err(format!("cannot bind {}: {e}", settings.listen_addr));
        }
    };
    // Building the tokenizer takes seconds in debug builds: not on a request.
    tokio::task::spawn_blocking(summarizer_agent::warm_tokenizer)
        .await
        .map_err(|e| e.to_string())?;
    summarizer_agent::server::run(settings, listener, service_kit::shutdown::signal())
        .await
        .map_err(|e: AgentError| e.to_string())
}
