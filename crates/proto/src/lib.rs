//! Wire contracts shared by the chat-memory services.
//!
//! # Layout
//! - [`v1`]: the public API served by the gateway (`chatmemory.v1`).
//! - [`store`]: memory-store's internal API (`chatmemory.store.v1`).
//! - [`jobs`]: the update-job payload (where jobs go on the stream is job-queue's).
//! - [`namespace`]: [`namespace::TenantChatId`], the tenant namespace of chat
//!   ids (`<tenant>/<chat>`) every service behind the gateway sees.
//! - [`time`]: conversions between protobuf timestamps and `chrono`.
//! - [`client`]: dialing the gateway from a command-line tool (TLS with a CA file),
//!   and printing an error with all its causes.
//! - [`FILE_DESCRIPTOR_SET`]: every service above, for gRPC reflection and tests
//!   that enumerate RPCs.

pub mod client;
pub mod jobs;
pub mod namespace;
pub mod time;

/// The protobuf timestamp every message above uses.
pub use prost_types::Timestamp;

/// Public API: `chatmemory.v1`.
pub mod v1 {
    tonic::include_proto!("chatmemory.v1");

    /// The `domain` of every `google.rpc.ErrorInfo` the gateway sends (its
    /// `reason` names why a call was refused; README, "The API").
    pub const ERROR_DOMAIN: &str = "chatmemory";
}

/// Internal memory-store API: `chatmemory.store.v1` (re-exported from `store::v1`,
/// whose nesting mirrors the package so generated cross-package paths resolve).
pub mod store {
    pub use self::v1::*;

    /// Metadata memory-store puts on a `GetMemory` NOT_FOUND for a chat with no
    /// memory at all (as opposed to one the caller may not see): gateways may
    /// cache that answer for every caller.
    pub const ABSENT_METADATA: &str = "chat-memory-absent";

    #[allow(clippy::all)]
    pub mod v1 {
        tonic::include_proto!("chatmemory.store.v1");
    }
}

/// Encoded `FileDescriptorSet` of all chat-memory protos.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chatmemory_descriptor.bin"));
