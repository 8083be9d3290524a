//! The load-test crate's library: what the `chat-memory-bench` scenarios and
//! tests share.
//!
//! # Layout
//! - [`stand_in`]: an OpenAI-compatible stand-in for a hosted model, with a
//!   provider's latency, errors and concurrency limit (429 + Retry-After).
//!
//! The scenarios themselves (`burst`, `sustained`, `scale-out`, `read-path`,
//! `readiness`, `faults`)
//! live in the binary, `src/main.rs`.

pub mod stand_in;
