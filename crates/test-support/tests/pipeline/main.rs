//! End-to-end tests of the update -> summarize -> retrieve pipeline on the real
//! parts: Postgres, JetStream, the MCP agent, every service over gRPC.
//!
//! - [`memory`]: an update becomes a readable memory; later ones build on it; pending counts.
//! - [`ordering`]: acceptance order across workers; redelivered and repeated jobs apply once.
//! - [`idempotency`]: idempotency keys (a retry is one job; a reused key is refused).
//! - [`requests`]: bad updates and reads are refused naming the field; unknown ids are NOT_FOUND.
//! - [`deletion`]: a deletion removes memory and jobs, and queued jobs do not bring it back.
//! - [`availability`]: memory-store or NATS down, a full queue, health.
//!
//! Request builders come from `test_support::requests`.

mod availability;
mod deletion;
mod idempotency;
mod memory;
mod ordering;
mod requests;

use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(30);
