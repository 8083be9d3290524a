//! The CLI's output going to a reader that already left (`chat-memory ... | head`)
//! must not panic: the command finishes and exits like any other.

use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_does_not_panic_the_cli() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader); // every write now fails with EPIPE
    let out = Command::new(env!("CARGO_BIN_EXE_chat-memory"))
        .args([
            "token",
            "--secret",
            "test-only-hs256-secret-0123456789abcdef",
            "--tenant",
            "t",
            "--user",
            "u",
        ])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run chat-memory");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
