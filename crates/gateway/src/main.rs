//! `gateway`: chat-memory's public gRPC API (start-up: `service_kit::entry`).

fn main() -> std::process::ExitCode {
    service_kit::entry::main("gateway", "chat-memory public gRPC API", gateway::run)
}
