//! `summarizer-worker`: applies update jobs in order per chat (start-up:
//! `service_kit::entry`; the listener serves health).

fn main() -> std::process::ExitCode {
    service_kit::entry::main(
        "summarizer-worker",
        "chat-memory update job worker",
        summarizer_worker::run,
    )
}
