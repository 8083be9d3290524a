//! Parsing requests into domain types. Everything past this module only sees
//! values that passed these checks ("parse, don't validate").
//!
//! Limits (all configurable under `[limits]`):
//! - `chat_id`: 1..=`max_chat_id_len` bytes of `[A-Za-z0-9._:@-]`;
//! - `messages`: 1..=`max_messages` per request;
//! - each `content`: non-blank, at most `max_message_bytes` bytes, no control
//!   characters other than tab, line feed and carriage return;
//! - all contents together: at most `max_request_bytes` bytes;
//! - `role`: user, assistant, system or tool (unspecified or unknown values rejected);
//! - `client_message_id` and `idempotency_key`: at most 128 bytes of printable ASCII.

use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;
use uuid::Uuid;

use chat_memory_proto::v1::{ChatMessage, Role, UpdateMemoryRequest};

/// Request size limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_chat_id_len: usize,
    pub max_messages: usize,
    pub max_message_bytes: usize,
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chat_id_len: 128,
            max_messages: 100,
            max_message_bytes: 32 * 1024,
            max_request_bytes: 1024 * 1024,
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
        Ok(())
    }
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
        let mut total = 0usize;
        let mut messages = Vec::with_capacity(req.messages.len());
        for (i, m) in req.messages.into_iter().enumerate() {
            total += m.content.len();
            messages.push(parse_message(i, m, limits)?);
        }
        if total > limits.max_request_bytes {
            return Err(violation(
                "messages",
                format!(
                    "contents total {total} bytes, more than the {} allowed per request",
                    limits.max_request_bytes
                ),
            ));
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
    m: ChatMessage,
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
        Ok(Role::User | Role::Assistant | Role::System | Role::Tool) => {}
    }
    let field = || format!("messages[{i}].content");
    if m.content.trim().is_empty() {
        return Err(violation(field(), "must not be empty"));
    }
    if m.content.len() > limits.max_message_bytes {
        return Err(violation(
            field(),
            format!(
                "must be at most {} bytes, got {}",
                limits.max_message_bytes,
                m.content.len()
            ),
        ));
    }
    if let Some(c) = m
        .content
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(violation(
            field(),
            format!("contains control character U+{:04X}", u32::from(c)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role: role as i32,
            content: content.into(),
            ..Default::default()
        }
    }

    fn request(chat_id: &str, messages: Vec<ChatMessage>) -> UpdateMemoryRequest {
        UpdateMemoryRequest {
            chat_id: chat_id.into(),
            messages,
            idempotency_key: String::new(),
        }
    }

    #[test]
    fn a_well_formed_request_parses() {
        let req = request(
            "chat-1",
            vec![msg(Role::User, "My plan is Blue Shield PPO 500.\nThanks")],
        );
        let cmd = UpdateCommand::parse(req, &Limits::default()).expect("valid");
        assert_eq!(cmd.chat_id.as_str(), "chat-1");
        assert_eq!(cmd.messages.len(), 1);
    }

    #[test]
    fn each_bad_input_names_its_field() {
        let limits = Limits {
            max_chat_id_len: 16,
            max_messages: 3,
            max_message_bytes: 64,
            max_request_bytes: 100,
        };
        let long = "x".repeat(65);
        let cases: Vec<(&str, UpdateMemoryRequest, &str)> = vec![
            (
                "empty chat id",
                request("", vec![msg(Role::User, "hi")]),
                "chat_id",
            ),
            (
                "long chat id",
                request(&"c".repeat(17), vec![msg(Role::User, "hi")]),
                "chat_id",
            ),
            (
                "chat id with space",
                request("a b", vec![msg(Role::User, "hi")]),
                "chat_id",
            ),
            ("no messages", request("c", vec![]), "messages"),
            (
                "too many messages",
                request("c", vec![msg(Role::User, "a"); 4]),
                "messages",
            ),
            (
                "over-size message",
                request("c", vec![msg(Role::User, &long)]),
                "messages[0].content",
            ),
            (
                "control character",
                request(
                    "c",
                    vec![msg(Role::User, "ok"), msg(Role::User, "bell\u{7}")],
                ),
                "messages[1].content",
            ),
            (
                "blank content",
                request("c", vec![msg(Role::User, "  \n ")]),
                "messages[0].content",
            ),
            (
                "unspecified role",
                request("c", vec![msg(Role::Unspecified, "hi")]),
                "messages[0].role",
            ),
            (
                "unknown role",
                request(
                    "c",
                    vec![ChatMessage {
                        role: 42,
                        content: "hi".into(),
                        ..Default::default()
                    }],
                ),
                "messages[0].role",
            ),
            (
                "total too large",
                request(
                    "c",
                    vec![
                        msg(Role::User, &"y".repeat(60)),
                        msg(Role::User, &"y".repeat(60)),
                    ],
                ),
                "messages",
            ),
        ];
        for (name, req, field) in cases {
            let err = UpdateCommand::parse(req, &limits).expect_err(name);
            assert_eq!(err.field, field, "{name}: {err}");
        }
    }

    #[test]
    fn an_idempotency_key_with_spaces_is_rejected() {
        let mut req = request("c", vec![msg(Role::User, "hi")]);
        req.idempotency_key = "a key".into();
        let err = UpdateCommand::parse(req, &Limits::default()).expect_err("must fail");
        assert_eq!(err.field, "idempotency_key");
    }

    #[test]
    fn job_ids_must_be_uuids() {
        assert_eq!(JobId::parse("").expect_err("empty").field, "job_id");
        assert!(JobId::parse("not-a-uuid").is_err());
        assert!(JobId::parse("0191f7c2-6b0e-7a3c-9f00-0123456789ab").is_ok());
    }
}
