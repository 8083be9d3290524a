//! What every chat-memory service binary shares to start up.
//!
//! # Layout
//! - [`backoff`]: the exponential backoff with jitter every retry loop waits with.
//! - [`entry`]: the start-up sequence every service `main` runs (settings,
//!   telemetry, listener, run until a signal).
//! - [`gather`]: calls to another service gathered into batch calls.
//! - `mcp_server` (feature `mcp-server`): an MCP endpoint and gRPC health on
//!   one listener, as the agent and chat-memory-mcp serve them.
//! - [`grpc_client`]: settings and a lazy channel for calling another service.
//! - [`settings`]: typed, layered settings (defaults, then a file, then
//!   `CHAT_MEMORY__SECTION__KEY` environment variables) and the common CLI flags.
//! - [`telemetry`]: JSON logs with trace ids, OTLP traces and metrics, `/metrics`,
//!   trace-context propagation; the guard flushes on drop.
//! - [`shutdown`]: a future that resolves on SIGINT or SIGTERM.
//! - [`secret`]: [`secret::Secret`], a setting that never prints.
//! - [`service_auth`]: the service token between internal services (server
//!   layer, client interceptor), compared in constant time.
//! - [`tls`]: TLS settings of gRPC listeners and clients.

/// Every binary linking service-kit (the services, the CLI, the benchmarks and
/// the tests) allocates with mimalloc: under load, glibc's malloc and free were
/// 10-20 % of memory-store's, the worker's and the agent's CPU (`perf`, 2026-12-05).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod backoff;
pub mod entry;
pub mod gather;
pub mod grpc_client;
#[cfg(feature = "mcp-server")]
pub mod mcp_server;
pub mod secret;
pub mod service_auth;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
