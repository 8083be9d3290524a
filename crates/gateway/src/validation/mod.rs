//! The validation layer: requests become domain types here, and everything
//! past this module only sees values that passed these checks ("parse, don't
//! validate"). The fuzz target (`fuzz/`) drives [`UpdateCommand::parse`].
//!
//! Limits (configurable under `[limits]`, defaults in brackets):
//! - `chat_id`: 1..=`max_chat_id_len` [128] bytes of `[A-Za-z0-9._:@-]`; never
//!   `/`, the separator of the tenant namespace ([`ChatId::namespaced`],
//!   [`TenantChatId`]);
//! - `messages`: 1..=`max_messages` [100] per request;
//! - each `content`: normalised to Unicode NFC first (so equal text is stored
//!   and limited alike), then non-blank, at most `max_message_bytes` [32 KiB];
//!   no control characters other than tab, line feed and carriage return, and
//!   no bidirectional overrides or isolates (U+202A..U+202E, U+2066..U+2069),
//!   which can make text read differently from what it is;
//! - the whole request (contents, ids, keys): at most `max_request_bytes` [1 MiB];
//! - `role`: one of `allowed_roles` [user, assistant, system, tool]; unspecified
//!   or unknown values are rejected;
//! - `client_message_id` and `idempotency_key`: at most 128 bytes of printable ASCII.

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::v1::{ChatMessage, GetMemoryRequest, Role, UpdateMemoryRequest};

/// Request size limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_chat_id_len: usize,
    pub max_messages: usize,
    pub max_message_bytes: usize,
    pub max_request_bytes: usize,
    /// Roles a message may have: `user`, `assistant`, `system`, `tool`.
    pub allowed_roles: Vec<String>,
    /// Longest read-your-writes wait a GetMemory may ask for (`wait_ms`).
    pub max_read_wait_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chat_id_len: 128,
            max_messages: 100,
            max_message_bytes: 32 * 1024,
            max_request_bytes: 1024 * 1024,
            allowed_roles: ["user", "assistant", "system", "tool"]
                .map(str::to_owned)
                .to_vec(),
            max_read_wait_ms: 10_000,
        }
    }
}

impl Limits {
    /// # Errors
    /// [`SettingsError::Invalid`] for a zero or inconsistent limit.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_chat_id_len == 0 || self.max_messages == 0 || self.max_message_bytes == 0 {
            return Err(SettingsError::invalid(
                "limits",
                "every limit must be positive",
            ));
        }
        if self.max_request_bytes < self.max_message_bytes {
            return Err(SettingsError::invalid(
                "limits.max_request_bytes",
                "must be >= limits.max_message_bytes",
            ));
        }
        if self.allowed_roles.is_empty()
            || self.allowed_roles.iter().any(|r| role_by_name(r).is_none())
        {
            return Err(SettingsError::invalid(
                "limits.allowed_roles",
                "must list one or more of user, assistant, system, tool",
            ));
        }
        Ok(())
    }

    fn allows(&self, role: Role) -> bool {
        self.allowed_roles
            .iter()
            .any(|r| role_by_name(r) == Some(role))
    }
}

fn role_by_name(name: &str) -> Option<Role> {
    match name {
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        "system" => Some(Role::System),
        "tool" => Some(Role::Tool),
        _ => None,
    }
}

/// Separator between a tenant and a chat id in the namespaced ids every
/// service behind the gateway sees ([`TenantChatId`]). Public chat ids cannot
/// contain it.
pub use chat_memory_proto::namespace::SEPARATOR as NAMESPACE_SEPARATOR;

/// Whether a character may not appear in message content.
pub fn is_forbidden_char(c: char) -> bool {
    (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Longest accepted `client_message_id` or `idempotency_key`.
pub const MAX_KEY_LEN: usize = 128;

/// A request field that failed validation: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldViolation {
    pub field: String,
    pub reason: String,
}

fn violation(field: impl Into<String>, reason: impl Into<String>) -> FieldViolation {
    FieldViolation {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A validated chat id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatId(String);

impl ChatId {
    /// # Errors
    /// A [`FieldViolation`] on `chat_id` when empty, too long, or with other characters.
    pub fn parse(raw: &str, limits: &Limits) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(violation("chat_id", "must not be empty"));
        }
        if raw.len() > limits.max_chat_id_len {
            return Err(violation(
                "chat_id",
                format!(
                    "must be at most {} bytes, got {}",
                    limits.max_chat_id_len,
                    raw.len()
                ),
            ));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')))
        {
            return Err(violation(
                "chat_id",
                format!("character {c:?} is not allowed (use A-Z a-z 0-9 . _ : @ -)"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id memory-store and the queue see: `<tenant>/<chat_id>`. Two tenants
    /// using the same chat id get two different chats.
    ///
    /// # Errors
    /// A [`FieldViolation`] on `chat_id` only for a tenant id the gate refuses
    /// (empty, or holding the separator): a parsed chat id is never empty and
    /// never holds the separator.
    pub fn namespaced(&self, tenant: &str) -> Result<TenantChatId, FieldViolation> {
        TenantChatId::new(tenant, &self.0).map_err(|e| violation("chat_id", e.to_string()))
    }
}

/// A validated job id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobId(pub Uuid);

impl JobId {
    /// # Errors
    /// A [`FieldViolation`] on `job_id` unless it is a UUID.
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(violation("job_id", "must not be empty"));
        }
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| violation("job_id", "must be a UUID"))
    }
}

/// What a GetMemory waits for before it answers (read-your-writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadCondition {
    /// At least this version.
    pub min_version: Option<i64>,
    /// This job applied (or failed).
    pub after_job: Option<Uuid>,
    /// How long to wait for it (zero: answer at once).
    pub wait: std::time::Duration,
}

/// A validated GetMemory request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadQuery {
    pub chat_id: ChatId,
    /// `None` when the request asked for neither a version nor a job.
    pub condition: Option<ReadCondition>,
}

impl ReadQuery {
    /// # Errors
    /// A [`FieldViolation`] naming `chat_id`, `min_version`, `after_job_id` or `wait_ms`.
    pub fn parse(req: &GetMemoryRequest, limits: &Limits) -> Result<Self, FieldViolation> {
        let chat_id = ChatId::parse(&req.chat_id, limits)?;
        if req.min_version < 0 {
            return Err(violation("min_version", "must not be negative"));
        }
        let after_job = if req.after_job_id.is_empty() {
            None
        } else {
            Some(Uuid::parse_str(&req.after_job_id).map_err(|_| {
                violation("after_job_id", "must be a UUID (an UpdateMemory job id)")
            })?)
        };
        if req.wait_ms > limits.max_read_wait_ms {
            return Err(violation(
                "wait_ms",
                format!(
                    "must be at most {} (limits.max_read_wait_ms)",
                    limits.max_read_wait_ms
                ),
            ));
        }
        let min_version = (req.min_version > 0).then_some(req.min_version);
        let condition = (min_version.is_some() || after_job.is_some()).then(|| ReadCondition {
            min_version,
            after_job,
            wait: std::time::Duration::from_millis(u64::from(req.wait_ms)),
        });
        if condition.is_none() && req.wait_ms > 0 {
            return Err(violation(
                "wait_ms",
                "needs min_version or after_job_id (what to wait for)",
            ));
        }
        Ok(Self { chat_id, condition })
    }
}

/// A validated message.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidMessage(pub ChatMessage);

/// A validated update request.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateCommand {
    pub chat_id: ChatId,
    pub messages: Vec<ValidMessage>,
    pub idempotency_key: Option<String>,
}

impl UpdateCommand {
    /// Parses an `UpdateMemoryRequest`, reporting the first violation found.
    ///
    /// # Errors
    /// A [`FieldViolation`] naming the field, e.g. `messages[2].content`.
    pub fn parse(req: UpdateMemoryRequest, limits: &Limits) -> Result<Self, FieldViolation> {
        let chat_id = ChatId::parse(&req.chat_id, limits)?;
        if req.messages.is_empty() {
            return Err(violation("messages", "must contain at least one message"));
        }
        if req.messages.len() > limits.max_messages {
            return Err(violation(
                "messages",
                format!(
                    "at most {} messages per request, got {}",
                    limits.max_messages,
                    req.messages.len()
                ),
            ));
        }
        let idempotency_key = match req.idempotency_key.as_str() {
            "" => None,
            key => Some(printable_key("idempotency_key", key)?.to_owned()),
        };
        let mut total = chat_id.as_str().len() + req.idempotency_key.len();
        let mut messages = Vec::with_capacity(req.messages.len());
        for (i, m) in req.messages.into_iter().enumerate() {
            let m = parse_message(i, m, limits)?;
            total += m.0.content.len() + m.0.client_message_id.len();
            if total > limits.max_request_bytes {
                return Err(violation(
                    "messages",
                    format!(
                        "the request exceeds the {} bytes allowed per request",
                        limits.max_request_bytes
                    ),
                ));
            }
            messages.push(m);
        }
        Ok(Self {
            chat_id,
            messages,
            idempotency_key,
        })
    }
}

fn parse_message(
    i: usize,
    mut m: ChatMessage,
    limits: &Limits,
) -> Result<ValidMessage, FieldViolation> {
    match Role::try_from(m.role) {
        Ok(Role::Unspecified) => {
            return Err(violation(format!("messages[{i}].role"), "must be set"));
        }
        Err(_) => {
            return Err(violation(
                format!("messages[{i}].role"),
                format!("unknown role {}", m.role),
            ));
        }
        Ok(role @ (Role::User | Role::Assistant | Role::System | Role::Tool)) => {
            if !limits.allows(role) {
                return Err(violation(
                    format!("messages[{i}].role"),
                    format!("role {} is not allowed here", role.as_str_name()),
                ));
            }
        }
    }
    let field = || format!("messages[{i}].content");
    let within_size = |content: &str| {
        if content.len() > limits.max_message_bytes {
            return Err(violation(
                field(),
                format!(
                    "must be at most {} bytes, got {}",
                    limits.max_message_bytes,
                    content.len()
                ),
            ));
        }
        Ok(())
    };
    // Checked before normalising too: NFC can grow text (up to 3x), and an
    // over-size message should not cost a normalisation pass.
    within_size(&m.content)?;
    if !unicode_normalization::is_nfc_quick(m.content.chars())
        .eq(&unicode_normalization::IsNormalized::Yes)
    {
        m.content = m.content.nfc().collect();
    }
    if m.content.trim().is_empty() {
        return Err(violation(field(), "must not be empty"));
    }
    within_size(&m.content)?;
    if let Some(c) = m.content.chars().find(|&c| is_forbidden_char(c)) {
        return Err(violation(
            field(),
            format!("contains forbidden character U+{:04X}", u32::from(c)),
        ));
    }
    if !m.client_message_id.is_empty() {
        printable_key(
            &format!("messages[{i}].client_message_id"),
            &m.client_message_id,
        )?;
    }
    if let Some(ts) = &m.sent_at
        && chat_memory_proto::time::from_timestamp(ts).is_none()
    {
        return Err(violation(
            format!("messages[{i}].sent_at"),
            "is not a valid timestamp",
        ));
    }
    Ok(ValidMessage(m))
}

fn printable_key<'a>(field: &str, key: &'a str) -> Result<&'a str, FieldViolation> {
    if key.len() > MAX_KEY_LEN {
        return Err(violation(
            field,
            format!("must be at most {MAX_KEY_LEN} bytes"),
        ));
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(violation(field, "must be printable ASCII without spaces"));
    }
    Ok(key)
}
