//! `chat-memory-mcp`: serves chat memory as MCP tools, calling the gateway
//! with each caller's own token (start-up: `service_kit::entry`).

fn main() -> std::process::ExitCode {
    service_kit::entry::main(
        "chat-memory-mcp",
        "MCP endpoint for chat memory (streamable HTTP at /mcp), in front of the gateway",
        mcp_front::server::run,
    )
}
