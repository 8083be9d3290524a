//! Table tests of the validation layer.

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
        ..Limits::default()
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

#[test]
fn content_is_normalised_to_nfc() {
    // "e" + combining acute accent becomes the single precomposed character.
    let req = request("c", vec![msg(Role::User, "caf\u{0065}\u{0301}")]);
    let cmd = UpdateCommand::parse(req, &Limits::default()).expect("valid");
    assert_eq!(cmd.messages[0].0.content, "caf\u{00E9}");
}

#[test]
fn bidi_overrides_and_c1_controls_are_rejected() {
    for bad in [
        "abc\u{202E}cba",
        "x\u{2066}y",
        "next\u{0085}line",
        "esc\u{1b}[31m",
    ] {
        let req = request("c", vec![msg(Role::User, bad)]);
        let err = UpdateCommand::parse(req, &Limits::default()).expect_err(bad);
        assert_eq!(err.field, "messages[0].content", "{bad:?}");
    }
}

#[test]
fn a_role_outside_allowed_roles_is_rejected() {
    let limits = Limits {
        allowed_roles: vec!["user".into(), "assistant".into()],
        ..Limits::default()
    };
    let req = request("c", vec![msg(Role::System, "you are root")]);
    let err = UpdateCommand::parse(req, &limits).expect_err("system not allowed");
    assert_eq!(err.field, "messages[0].role");
}

#[test]
fn namespaced_ids_round_trip_only_within_their_tenant() {
    let chat = ChatId::parse("chat-1", &Limits::default()).expect("valid");
    let ns = chat.namespaced("acme").expect("a valid tenant");
    assert_eq!(ns.as_str(), "acme/chat-1");
    let public =
        |tenant| TenantChatId::parse_in(tenant, ns.as_str()).map(|id| id.chat().to_owned());
    assert_eq!(public("acme").as_deref(), Some("chat-1"));
    assert_eq!(public("acm"), None);
    assert_eq!(public("other"), None);
    assert!(ChatId::parse("acme/chat-1", &Limits::default()).is_err());
    assert!(chat.namespaced("").is_err());
}

fn read(chat_id: &str, min_version: i64, after_job_id: &str, wait_ms: u32) -> GetMemoryRequest {
    GetMemoryRequest {
        chat_id: chat_id.into(),
        min_version,
        after_job_id: after_job_id.into(),
        wait_ms,
    }
}

#[test]
fn a_plain_read_has_no_condition_and_a_read_your_writes_read_has_one() {
    let limits = Limits::default();
    let plain = ReadQuery::parse(&read("c", 0, "", 0), &limits).expect("valid");
    assert_eq!(plain.condition, None);
    let job = Uuid::now_v7();
    let ryw = ReadQuery::parse(&read("c", 3, &job.to_string(), 250), &limits).expect("valid");
    assert_eq!(
        ryw.condition,
        Some(ReadCondition {
            min_version: Some(3),
            after_job: Some(job),
            wait: std::time::Duration::from_millis(250),
        })
    );
}

#[test]
fn each_bad_read_condition_names_its_field() {
    let limits = Limits {
        max_read_wait_ms: 1_000,
        ..Limits::default()
    };
    let cases = [
        (read("c", -1, "", 0), "min_version"),
        (read("c", 0, "not-a-uuid", 0), "after_job_id"),
        (read("c", 1, "", 1_001), "wait_ms"),
        (read("c", 0, "", 100), "wait_ms"),
        (read("", 1, "", 0), "chat_id"),
    ];
    for (req, field) in cases {
        let err = ReadQuery::parse(&req, &limits).expect_err(field);
        assert_eq!(err.field, field, "{req:?}");
    }
}
