//! The MCP front: chat memory as MCP tools over streamable HTTP, for agents
//! that speak MCP rather than gRPC.
//!
//! Every tool calls the gateway's public gRPC API (`chatmemory.v1.MemoryService`)
//! with the MCP caller's own bearer token. The front verifies nothing and holds
//! no key: authentication, scopes, per-user rate limits, tenant isolation and
//! the audit log are the gateway's, by construction, for MCP callers as for
//! gRPC ones. See the crate's README.md.
//!
//! # Layout
//! - [`server`]: `run`: MCP at `/mcp` (behind the bearer check) and gRPC health
//!   on one listener.
//! - [`auth`]: the bearer check (401 without a token) and [`auth::Caller`],
//!   the caller's token carried to the tools.
//! - [`tools`]: `read_memory`, `add_messages`, `update_status`, and in
//!   [`tools::types`] their schemas and conversions to the gateway's messages.
//! - [`gateway`]: the gRPC calls, each with the caller's token and trace context.
//! - [`error`]: [`FrontError`] (why the front stopped) and [`ToolError`], mapped
//!   once to the MCP tool error the caller sees.
//! - [`settings`]: the binary's typed settings.
//! - `metrics`: tool calls by tool and code, and their duration.
//!
//! `main.rs` only loads settings, starts telemetry, binds and calls
//! [`server::run`].

pub mod auth;
pub mod error;
pub mod gateway;
mod metrics;
pub mod server;
pub mod settings;
pub mod tools;

pub use error::{FrontError, ToolError};
