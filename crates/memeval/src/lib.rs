//! Measured memory quality, kept out of the services' runtime.
//!
//! # Layout
//! - [`dataset`]: the eval's neutral conversation format (read only; the QA
//!   is never read, so it cannot leak into the system under test).
//! - [`drive`]: feeds a conversation to the real agent layer
//!   (`SummarizerAgent` around the offline backend, the same code the MCP
//!   server runs) batch by batch, each call starting from the previous
//!   memory, and returns the final memory plus per-call latencies.
//! - [`budget`]: how one total budget is split into the layer limits.
//!
//! `main.rs` parses the command line: `run` writes memories in the scorer's
//! format, `bench` prints per-call latency percentiles.

pub mod budget;
pub mod dataset;
pub mod drive;
