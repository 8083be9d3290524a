//! The front's errors: why it stopped ([`FrontError`]), and why one tool call
//! failed ([`ToolError`]), mapped once, here, to the MCP tool error the caller
//! sees.
//!
//! A tool error is an MCP tool result with `isError: true` whose structured
//! content (and text, as JSON) is
//! `{"code": "INVALID_ARGUMENT", "message": "...", "field_violations": [{"field": "chat_id", "description": "..."}], "retry_after_secs": null}`:
//! the gateway's status code name, its message, the `google.rpc.BadRequest`
//! field violations and the `retry-after` hint. Tool errors (rather than
//! JSON-RPC errors) because the model must see them to react: fix the field,
//! wait and retry, or tell the user.

use std::io;

use rmcp::{
    handler::server::tool::IntoCallToolResult,
    model::{CallToolResponse, CallToolResult},
};
use serde::Serialize;
use service_kit::settings::SettingsError;
use service_kit::telemetry::grpc::code_name;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Why the front stopped serving (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// The gateway channel could not be built (URL, CA file).
    #[error("{0}")]
    Settings(#[from] SettingsError),
    /// The listener's local address could not be read.
    #[error("cannot read the listener address: {0}")]
    ListenerAddress(#[source] io::Error),
    /// Serving HTTP failed (accepting connections, for example).
    #[error("serving failed: {0}")]
    Serve(#[source] io::Error),
}

/// Why one tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The gateway refused the call or could not be reached. Its status
    /// carries the code, the message and the details the caller gets.
    #[error("gateway answered {}", code_name(.0.code()))]
    Gateway(Status),
    /// An argument that cannot be put into a gateway request at all (an
    /// unknown role name). Everything else is validated by the gateway.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The request reached a tool without the caller's token: the HTTP layer
    /// refuses those, so this is a wiring bug, answered as UNAUTHENTICATED.
    #[error("no caller token on the request")]
    NoCallerToken,
    /// The gateway's answer lacked something its contract promises.
    #[error("the gateway's answer has no valid {0}")]
    Contract(&'static str),
}

/// The structured content of a tool error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolErrorBody {
    /// gRPC status code name, e.g. `INVALID_ARGUMENT`, `NOT_FOUND`.
    pub code: &'static str,
    /// What went wrong, for the model and the user.
    pub message: String,
    /// For `INVALID_ARGUMENT`: which fields, and why.
    pub field_violations: Vec<FieldViolation>,
    /// For `RESOURCE_EXHAUSTED` (rate limit, backpressure): seconds to wait
    /// before retrying.
    pub retry_after_secs: Option<u64>,
    /// For `RESOURCE_EXHAUSTED`: why, machine-readable (the gateway's
    /// `google.rpc.ErrorInfo` reason, e.g. `RATE_LIMITED`, `CHAT_BACKLOGGED`).
    pub reason: Option<String>,
}

/// One invalid field, as in `google.rpc.BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl ToolError {
    /// The body the caller sees. Expected refusals keep the gateway's message;
    /// for failures of the front's own connection the cause is logged here
    /// (with the trace id) and the caller gets a short, content-free message.
    pub fn body(&self) -> ToolErrorBody {
        match self {
            Self::Gateway(status) => gateway_body(status),
            Self::InvalidArgument { field, reason } => ToolErrorBody {
                code: code_name(Code::InvalidArgument),
                message: format!("{field}: {reason}"),
                field_violations: vec![FieldViolation {
                    field: field.clone(),
                    description: reason.clone(),
                }],
                retry_after_secs: None,
                reason: None,
            },
            Self::NoCallerToken => {
                tracing::error!("a tool ran without the caller's token");
                plain(Code::Unauthenticated, "a bearer token is required")
            }
            Self::Contract(what) => {
                tracing::error!(missing = what, "the gateway's answer broke its contract");
                plain(Code::Internal, "internal error")
            }
        }
    }

    /// The status code name of this error (for metrics and spans).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Gateway(status) => code_name(status.code()),
            Self::InvalidArgument { .. } => code_name(Code::InvalidArgument),
            Self::NoCallerToken => code_name(Code::Unauthenticated),
            Self::Contract(_) => code_name(Code::Internal),
        }
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, rmcp::ErrorData> {
        let value = serde_json::to_value(self.body()).map_err(|e| {
            rmcp::ErrorData::internal_error(format!("cannot encode a tool error: {e}"), None)
        })?;
        Ok(CallToolResult::structured_error(value).into())
    }
}

fn plain(code: Code, message: &str) -> ToolErrorBody {
    ToolErrorBody {
        code: code_name(code),
        message: message.to_owned(),
        field_violations: Vec::new(),
        retry_after_secs: None,
        reason: None,
    }
}

/// A status with a source was made by the client side (connection refused,
/// TLS, deadline): its text names internal addresses and is logged, not
/// forwarded. A status without one is the gateway's own answer, written for
/// callers: forwarded as is.
fn gateway_body(status: &Status) -> ToolErrorBody {
    let code = status.code();
    let local = std::error::Error::source(status).is_some();
    if local {
        let cause = chat_memory_proto::client::error_chain(status);
        tracing::warn!(code = code_name(code), error = %cause, "gateway call failed");
        let message = if code == Code::DeadlineExceeded {
            "the gateway did not answer in time, retry later"
        } else {
            "the gateway is unreachable, retry later"
        };
        return plain(code, message);
    }
    if is_unexpected(code) {
        tracing::warn!(code = code_name(code), error = %status.message(), "gateway call failed");
    } else {
        tracing::debug!(code = code_name(code), "gateway refused the call");
    }
    let field_violations = status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: v.field,
                    description: v.description,
                })
                .collect()
        })
        .unwrap_or_default();
    ToolErrorBody {
        code: code_name(code),
        message: status.message().to_owned(),
        field_violations,
        retry_after_secs: retry_after_secs(status),
        reason: status
            .get_details_error_info()
            .filter(|info| info.domain == chat_memory_proto::v1::ERROR_DOMAIN)
            .map(|info| info.reason),
    }
}

/// `retry-after` metadata (whole seconds), else `google.rpc.RetryInfo` rounded up.
fn retry_after_secs(status: &Status) -> Option<u64> {
    let header = status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    header.or_else(|| {
        let delay = status.get_details_retry_info()?.retry_delay?;
        Some(delay.as_secs() + u64::from(delay.subsec_nanos() > 0))
    })
}

/// Failures of the system rather than refusals of the request.
fn is_unexpected(code: Code) -> bool {
    match code {
        Code::Unknown
        | Code::DeadlineExceeded
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss
        | Code::Cancelled => true,
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unauthenticated => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn an_invalid_argument_carries_the_gateway_message_and_its_field_violations() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "chat_id: must be 1-128 characters",
            ErrorDetails::with_bad_request_violation("chat_id", "must be 1-128 characters"),
        );

        let body = ToolError::Gateway(status).body();

        assert_eq!(body.code, "INVALID_ARGUMENT");
        assert_eq!(body.message, "chat_id: must be 1-128 characters");
        assert_eq!(
            body.field_violations,
            vec![FieldViolation {
                field: "chat_id".into(),
                description: "must be 1-128 characters".into()
            }]
        );
        assert_eq!(body.retry_after_secs, None);
    }

    #[test]
    fn a_rate_limit_carries_its_retry_hint_from_metadata_or_retry_info() {
        let mut with_header = Status::resource_exhausted("rate limit exceeded, retry in 3 s");
        if let Ok(v) = "3".parse() {
            with_header.metadata_mut().insert("retry-after", v);
        }
        let with_details = Status::with_error_details(
            Code::ResourceExhausted,
            "too many updates are waiting",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1_200))),
        );

        assert_eq!(
            ToolError::Gateway(with_header).body().retry_after_secs,
            Some(3)
        );
        assert_eq!(
            ToolError::Gateway(with_details).body().retry_after_secs,
            Some(2)
        );
    }

    #[test]
    fn a_refusal_carries_the_gateways_reason() {
        let mut details = ErrorDetails::with_retry_info(Some(Duration::from_secs(1)));
        details.set_error_info(
            "CHAT_BACKLOGGED",
            "chatmemory",
            std::collections::HashMap::<String, String>::new(),
        );
        let status = Status::with_error_details(Code::ResourceExhausted, "backlogged", details);
        let body = ToolError::Gateway(status).body();
        assert_eq!(body.reason.as_deref(), Some("CHAT_BACKLOGGED"));
        assert_eq!(body.retry_after_secs, Some(1));

        let mut foreign = ErrorDetails::new();
        foreign.set_error_info(
            "QUOTA",
            "example.com",
            std::collections::HashMap::<String, String>::new(),
        );
        let status = Status::with_error_details(Code::ResourceExhausted, "quota", foreign);
        assert_eq!(
            ToolError::Gateway(status).body().reason,
            None,
            "another domain's reason"
        );
    }

    #[test]
    fn a_local_argument_error_has_the_gateway_shape() {
        let body = ToolError::InvalidArgument {
            field: "messages[1].role".into(),
            reason: "unknown role \"bot\"".into(),
        }
        .body();
        assert_eq!(body.code, "INVALID_ARGUMENT");
        assert_eq!(body.field_violations.len(), 1);
        assert_eq!(body.field_violations[0].field, "messages[1].role");
    }

    #[test]
    fn a_tool_error_becomes_a_structured_mcp_error_result() {
        let result =
            ToolError::Gateway(Status::not_found("chat not found")).into_call_tool_result();
        let Ok(CallToolResponse::Complete(result)) = result else {
            panic!("not a complete tool result: {result:?}");
        };
        assert_eq!(result.is_error, Some(true));
        let content = result.structured_content.unwrap_or_default();
        assert_eq!(content["code"], "NOT_FOUND");
        assert_eq!(content["message"], "chat not found");
    }

    #[test]
    fn every_code_has_its_canonical_name() {
        for (code, name) in [
            (Code::Unauthenticated, "UNAUTHENTICATED"),
            (Code::PermissionDenied, "PERMISSION_DENIED"),
            (Code::ResourceExhausted, "RESOURCE_EXHAUSTED"),
            (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
        ] {
            assert_eq!(code_name(code), name);
        }
    }
}
