//! `memory-store`: the only owner of Postgres (start-up: `service_kit::entry`).

fn main() -> std::process::ExitCode {
    service_kit::entry::main(
        "memory-store",
        "chat-memory's store: the only owner of Postgres",
        memory_store::run,
    )
}
