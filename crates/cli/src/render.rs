//! JSON renderings of API responses and errors.

use prost_types::Timestamp;
use serde_json::{Value, json};
use tonic::Status;

use chat_memory_proto::time::from_timestamp;
use chat_memory_proto::v1::{GetMemoryResponse, GetUpdateStatusResponse, JobState};

fn time(ts: Option<&Timestamp>) -> Value {
    ts.and_then(from_timestamp)
        .map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// The status's code and message, then its causes when the call failed on the
/// client's side (a broken connection is `Unknown: transport error` without them).
pub fn status(s: Status) -> String {
    let mut text = format!("{:?}: {}", s.code(), s.message());
    if let Some(cause) = std::error::Error::source(&s) {
        let chain = chat_memory_proto::client::error_chain(cause);
        // tonic often copies the first cause into the message: print it once.
        let rest = if chain == s.message() {
            ""
        } else {
            chain
                .strip_prefix(&format!("{}: ", s.message()))
                .unwrap_or(&chain)
        };
        if !rest.is_empty() {
            text.push_str(": ");
            text.push_str(rest);
        }
    }
    text
}

pub fn job(s: &GetUpdateStatusResponse) -> String {
    let state = JobState::try_from(s.state).map_or("unknown", |st| st.as_str_name());
    let v = json!({
        "job_id": s.job_id,
        "chat_id": s.chat_id,
        "state": state.trim_start_matches("JOB_STATE_").to_lowercase(),
        "attempts": s.attempts,
        "error": (!s.error.is_empty()).then_some(&s.error),
        "resulting_version": s.resulting_version,
        "applied_in_call": (!s.applied_in_call.is_empty()).then_some(&s.applied_in_call),
        "accepted_at": time(s.accepted_at.as_ref()),
        "updated_at": time(s.updated_at.as_ref()),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

pub fn memory(r: &GetMemoryResponse) -> String {
    let m = r.memory.clone().unwrap_or_default();
    let t = m.token_counts.unwrap_or_default();
    let f = r.freshness.clone().unwrap_or_default();
    let v = json!({
        "chat_id": r.chat_id,
        "version": m.version,
        "updated_at": time(m.updated_at.as_ref()),
        "user_confirmed": m.user_confirmed,
        "llm_inferred": m.llm_inferred,
        "general_summary": m.general_summary,
        "tokens": { "user_confirmed": t.user_confirmed, "llm_inferred": t.llm_inferred, "general_summary": t.general_summary, "total": t.total },
        "freshness": { "last_applied_job_id": f.last_applied_job_id, "pending_jobs": f.pending_jobs },
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// One audit row as a JSON line.
pub fn audit(e: &chat_memory_proto::v1::AuditEntry) -> String {
    json!({
        "at": time(e.at.as_ref()),
        "tenant": e.tenant,
        "user": e.user,
        "action": e.action,
        "chat_id": e.chat_id,
        "job_id": e.job_id,
        "outcome": e.outcome,
        "request_id": e.request_id,
        "trace_id": e.trace_id,
        "detail": e.detail,
    })
    .to_string()
}
