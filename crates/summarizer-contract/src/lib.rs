//! The summarizer agent's contract, shared by the agent (which serves it) and
//! the worker (which calls it), so the worker builds without the agent: no
//! MCP server, no tokenizer, no schema validator, no backends.
//!
//! # Layout
//! - [`tool`]: the `summarize` tool's wire types, `SummarizeInput` /
//!   `SummarizeOutput`; their doc comments are the JSON schema a model sees.
//! - [`client`]: [`client::AgentClient`], a reconnecting, timeout-bounded
//!   MCP caller of the tool, and its error type.
//! - [`tls`]: installs rustls' ring provider once per process (`https` feature).

pub mod client;
pub mod tls;
pub mod tool;
