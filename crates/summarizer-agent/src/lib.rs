//! The summarizer agent: an MCP server whose one tool, `summarize`, folds a
//! batch of chat messages into a chat's three-layer memory (facts the user
//! confirmed, the assistant's unconfirmed inferences, a rolling summary), plus
//! the client other services use to call it.
//!
//! # Layout
//! - [`tool`], [`client`]: the tool's wire contract and its MCP client, from the
//!   `summarizer-contract` crate (re-exported).
//! - [`agent`]: the base agent pattern (prompt files, JSON Schema validation,
//!   retries with feedback, deadlines, token accounting) that model-backed
//!   backends are built on.
//! - [`summarizer`]: [`summarizer::SummarizerAgent`], which wraps every
//!   backend with one deadline, the output check and the token budgets.
//! - [`backend`]: the [`backend::SummarizerBackend`] trait, the default
//!   [`backend::offline::OfflineBackend`] (deterministic sentence-level
//!   heuristics) and [`backend::openai::OpenAiBackend`] (any
//!   OpenAI-compatible Chat Completions endpoint).
//! - `memory`: the structured state every backend writes into (items with
//!   provenance and dates, eviction log), budgets, rendering, token counting
//!   with `cl100k_base`, temporal anchoring.
//! - [`server`]: `run` / `run_with_backend`: MCP streamable HTTP at `/mcp` and
//!   gRPC health (`grpc.health.v1`) on one listener.
//! - [`settings`]: the binary's typed settings.
//! - `faults`: test-only fault injection (`[faults]`, off by default; only with
//!   the `fault-injection` feature, which release builds leave out).
//! - `error`: [`backend::BackendError`] (why a call failed) and [`AgentError`]
//!   (why the server stopped).
//!
//! `main.rs` only loads settings, starts telemetry, binds and calls
//! [`server::run`].

pub mod agent;
pub mod backend;
mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod memory;
pub mod server;
pub mod settings;
pub mod summarizer;

// The contract lives in its own crate (the worker depends on it alone);
// re-exported so the agent's modules and tests keep their paths.
use summarizer_contract::tls;
pub use summarizer_contract::{client, tool};

pub use backend::offline::warm_tokenizer;
pub use error::AgentError;
pub use memory::tokens::count_tokens;
pub use tls::install_ring_provider;
