//! The base agent pattern: what every agent in this crate is made of, so the
//! next agent (a classifier, a redactor) reuses it instead of re-inventing
//! retries and validation.
//!
//! ```text
//!             AgentSpec (name, version, prompt files, typed Input/Output)
//!                 │
//! input ──render as DATA──▶ LlmAgent ──ChatModel (openai, …)──▶ raw text
//!                              ▲  │ parse + JSON Schema + spec checks
//!                              │  ▼
//!                 error fed back, bounded retries ──▶ Output + CallUsage
//! ```
//!
//! - [`prompt`]: prompt files (`prompts/*.md`, compiled in) and the DATA block
//!   that keeps untrusted chat content from reading as instructions.
//! - [`schema`]: a schemars schema per output type, compiled once with
//!   `jsonschema`; every output is checked against it.
//! - [`model`]: the [`model::ChatModel`] trait a language-model backend implements.
//! - [`runner`]: [`runner::AgentSpec`] and [`runner::LlmAgent`]: retries with
//!   the validation error fed back, a timeout per call, token accounting.
//!
//! Its first user is the OpenAI-compatible backend (`crate::backend::openai`);
//! `crate::summarizer::SummarizerAgent` wraps every backend with the
//! deadline, the output check and the token budgets.

pub mod model;
pub mod prompt;
pub mod runner;
pub mod schema;

/// Name and version of an agent, logged with every call so a memory can be
/// traced to the prompts and rules that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentInfo {
    pub name: &'static str,
    pub version: &'static str,
}

/// Identity of the summarizer agent (prompts and rules included).
pub const SUMMARIZER: AgentInfo = AgentInfo {
    name: "summarizer",
    version: "2.0.0",
};
