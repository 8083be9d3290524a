//! The summarizer agent: an MCP server whose one tool, `summarize`, folds a
//! batch of chat messages into a chat's three-layer memory (facts the user
//! confirmed, the assistant's unconfirmed inferences, a rolling summary), plus
//! the client other services use to call it.
//!
//! # Layout
//! - [`tool`]: the tool's wire contract, `SummarizeInput` / `SummarizeOutput`;
//!   their doc comments are the JSON schema the model sees.
//! - [`backend`]: the [`backend::SummarizerBackend`] trait and the default
//!   [`backend::offline::OfflineBackend`] (deterministic heuristics, token
//!   budgets counted with `cl100k_base`).
//! - [`server`]: `run` / `run_with_backend`: MCP streamable HTTP at `/mcp` and
//!   gRPC health (`grpc.health.v1`) on one listener.
//! - [`client`]: [`client::AgentClient`], a reconnecting, timeout-bounded
//!   caller of the tool, and its error type.
//! - [`settings`]: the binary's typed settings.
//! - `error`: [`AgentError`], why the server stopped.
//!
//! `main.rs` only loads settings, starts telemetry, binds and calls
//! [`server::run`].

pub mod backend;
pub mod client;
mod error;
pub mod server;
pub mod settings;
pub mod tool;

pub use backend::offline::warm_tokenizer;
pub use error::AgentError;
