//! Fuzzes the gateway's validation layer: any request either parses into an
//! `UpdateCommand` that honours every documented limit, or is refused with a
//! field violation. It must never panic.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::v1::{ChatMessage, UpdateMemoryRequest};
use gateway::validation::{Limits, NAMESPACE_SEPARATOR, UpdateCommand, is_forbidden_char};

#[derive(Debug, Arbitrary)]
struct Input {
    chat_id: String,
    idempotency_key: String,
    messages: Vec<(i32, String, String)>,
    small_limits: bool,
}

fuzz_target!(|input: Input| {
    let limits = if input.small_limits {
        Limits {
            max_chat_id_len: 8,
            max_messages: 3,
            max_message_bytes: 64,
            max_request_bytes: 128,
            ..Limits::default()
        }
    } else {
        Limits::default()
    };
    let request = UpdateMemoryRequest {
        chat_id: input.chat_id.clone(),
        idempotency_key: input.idempotency_key,
        messages: input
            .messages
            .into_iter()
            .map(|(role, content, client_message_id)| ChatMessage {
                role,
                content,
                client_message_id,
                sent_at: None,
            })
            .collect(),
    };
    if let Ok(cmd) = UpdateCommand::parse(request, &limits) {
        let chat = cmd.chat_id.as_str();
        assert!(!chat.is_empty() && chat.len() <= limits.max_chat_id_len);
        assert!(!chat.contains(NAMESPACE_SEPARATOR));
        assert!(!cmd.messages.is_empty() && cmd.messages.len() <= limits.max_messages);
        let mut total = chat.len();
        for m in &cmd.messages {
            let content = &m.0.content;
            assert!(content.len() <= limits.max_message_bytes);
            assert!(!content.trim().is_empty());
            assert!(!content.chars().any(is_forbidden_char));
            assert!(unicode_is_nfc(content));
            total += content.len();
        }
        assert!(total <= limits.max_request_bytes);
        // A namespaced id always round-trips to the public one.
        let ns = cmd.chat_id.namespaced("tenant").expect("a valid tenant");
        let back = TenantChatId::parse_in("tenant", ns.as_str()).expect("in its namespace");
        assert_eq!(back.chat(), chat);
    }
});

fn unicode_is_nfc(s: &str) -> bool {
    use unicode_normalization::UnicodeNormalization;
    s.nfc().eq(s.chars())
}
