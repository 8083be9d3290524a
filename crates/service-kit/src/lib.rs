//! What every chat-memory service binary shares to start up.
//!
//! # Layout
//! - [`grpc_client`]: settings and a lazy channel for calling another service.
//! - [`settings`]: typed, layered settings (defaults, then a file, then
//!   `CHAT_MEMORY__SECTION__KEY` environment variables) and the common CLI flags.
//! - [`telemetry`]: structured JSON logs; the guard flushes on drop.
//! - [`shutdown`]: a future that resolves on SIGINT or SIGTERM.

pub mod grpc_client;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
