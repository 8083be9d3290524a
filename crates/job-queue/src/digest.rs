//! A keyed update's request digest: SHA-256 of its messages' protobuf
//! encoding, hex. Equal for a retry of the same request, different when an
//! idempotency key is reused for other messages. The gateway compares it at
//! acceptance (with the queued job it repeats, or with the one memory-store
//! registered); the worker hands it to memory-store with every keyed job, so a
//! job registered by the worker keeps it too, and a message whose key was used
//! before for other messages is never applied as that job.

use chat_memory_proto::v1::ChatMessage;
use prost::Message as _;
use sha2::Digest as _;

/// The digest of `messages`, in order (64 hex digits).
pub fn request_digest<'a>(messages: impl IntoIterator<Item = &'a ChatMessage>) -> String {
    let mut hasher = sha2::Sha256::new();
    for m in messages {
        hasher.update(m.encode_length_delimited_to_vec());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(content: &str) -> ChatMessage {
        ChatMessage {
            role: chat_memory_proto::v1::Role::User.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_digest_tells_other_messages_and_their_order_apart() {
        let (a, b) = (
            message("My plan is Blue Shield PPO."),
            message("My deductible is $2,000."),
        );
        let ab = request_digest([&a, &b]);
        assert_eq!(ab, request_digest([&a.clone(), &b.clone()]));
        assert_eq!(ab.len(), 64);
        assert_ne!(ab, request_digest([&b, &a]));
        assert_ne!(ab, request_digest([&a]));
        // Length-delimited: moving text across a message boundary changes it.
        assert_ne!(
            request_digest([&message("ab"), &message("c")]),
            request_digest([&message("a"), &message("bc")])
        );
    }
}
