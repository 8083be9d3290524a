//! Peak resident memory (VmHWM) of the chat-memory processes on this machine.

const SERVICES: [&str; 4] = [
    "gateway",
    "memory-store",
    "summarizer-agen",
    "summarizer-work",
];

pub fn print_peak_memory() {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if !SERVICES.contains(&comm) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
            println!(
                "peak memory {comm} (pid {}): {}",
                entry.file_name().to_string_lossy(),
                line.trim_start_matches("VmHWM:").trim()
            );
        }
    }
}
