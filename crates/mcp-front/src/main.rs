//! `chat-memory-mcp`: serves chat memory as MCP tools, calling the gateway
//! with each caller's own token.

use clap::Parser;
use mcp_front::settings::Settings;
use service_kit::settings::CommonArgs;

#[derive(Debug, Parser)]
#[command(
    name = "chat-memory-mcp",
    version,
    about = "MCP endpoint for chat memory (streamable HTTP at /mcp), in front of the gateway"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() {
    if let Err(line) = start(Args::parse()).await {
        eprintln!("chat-memory-mcp: {line}");
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
    let _telemetry = service_kit::telemetry::start("chat-memory-mcp", &settings.telemetry).await?;
    let listener = tokio::net::TcpListener::bind(&settings.listen_addr)
        .await
        .map_err(|e| format!("cannot bind listen_addr {}: {e}", settings.listen_addr))?;
    mcp_front::server::run(settings, listener, service_kit::shutdown::signal())
        .await
        .map_err(|e| e.to_string())
}
