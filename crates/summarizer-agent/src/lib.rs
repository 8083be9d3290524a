//! The summarizer agent: an MCP server whose one tool, `summarize`, folds a
//! batch of chat messages into a chat's three-layer memory (facts the user
//! confirmed, the assistant's unconfirmed inferences, a rolling summary), plus
//! the client other services use to call it.
//!
//! # Layout
//! - [`tool`]: the tool's wire contract, `SummarizeInput` / `SummarizeOutput`;
//!   their doc comments are the JSON schema the model sees.
//! - [`agent`]: the base agent pattern (prompt files, JSON Schema validation,
//!   retries with feedback, deadlines, token accounting) and
//!   [`agent::SummarizerAgent`], which wraps every backend with it.
//! - [`backend`]: the [`backend::SummarizerBackend`] trait, the default
//!   [`backend::offline::OfflineBackend`] (deterministic sentence-level
//!   heuristics) and [`backend::openai::OpenAiBackend`] (any
//!   OpenAI-compatible Chat Completions endpoint).
//! - `memory`: the structured state every backend writes into (items with
//!   provenance and dates, eviction log), budgets, rendering, token counting
//!   with `cl100k_base`, temporal anchoring.
//! - [`server`]: `run` / `run_with_backend`: MCP streamable HTTP at `/mcp` and
//!   gRPC health (`grpc.health.v1`) on one listener.
//! - [`client`]: [`client::AgentClient`], a reconnecting, timeout-bounded
//!   caller of the tool, and its error type.
//! - [`settings`]: the binary's typed settings.
//! - [`faults`]: test-only fault injection (`[faults]`, off by default).
//! - `tls`: installs rustls' ring provider once per process.
//! - `error`: [`AgentError`], why the server stopped.
//!
//! `main.rs` only loads settings, starts telemetry, binds and calls
//! [`server::run`].

pub mod agent;
pub mod backend;
pub mod client;
mod error;
pub mod faults;
mod memory;
pub mod server;
pub mod settings;
mod tls;
pub mod tool;

pub use backend::offline::warm_tokenizer;
pub use error::AgentError;
pub use memory::tokens::count_tokens;
pub use tls::install_ring_provider;
