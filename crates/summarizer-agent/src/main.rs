//! `summarizer-agent`: serves the `summarize` MCP tool and gRPC health
//! (start-up: `service_kit::entry`).

fn main() -> std::process::ExitCode {
    service_kit::entry::main(
        "summarizer-agent",
        "MCP server turning chat messages into layered memory",
        |s, l, stop| async move {
            // Building the tokenizer takes seconds in debug builds: not on a request.
            let _ = tokio::task::spawn_blocking(summarizer_agent::warm_tokenizer).await;
            summarizer_agent::server::run(s, l, stop).await
        },
    )
}
