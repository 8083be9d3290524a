"""Refusals as the client raises them: one class per kind, with the server's details."""

from __future__ import annotations

import time
from typing import Callable

import grpc
import pytest

from chat_memory import (
    NO_RETRY,
    ChatMemoryError,
    DeadlineExceeded,
    InvalidArgument,
    MemoryClient,
    Message,
    NotFound,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
)

from chat_memory.errors import from_rpc_error
from conftest import OTHER_TENANT, TENANT, sign_token

PLAN = ("user", "My plan is Blue Shield PPO.")


def test_the_same_key_twice_is_one_job_applied_once(client: MemoryClient, chat_id: str) -> None:
    first = client.update(chat_id, [PLAN], idempotency_key="turn-1")
    again = client.update(chat_id, [PLAN], idempotency_key="turn-1")

    assert first.job_id == again.job_id
    assert first.deduplicated is False
    assert again.deduplicated is True
    status = client.wait_for(first.job_id, timeout=20)
    assert status.resulting_version == 1
    # A later write shows whether the repeat was applied too: it would have made version 2.
    later = client.update(chat_id, [("user", "And my copay is $20.")], idempotency_key="turn-2")
    assert client.wait_for(later.job_id, timeout=20).resulting_version == 2


def test_the_same_key_with_other_messages_is_refused_naming_the_key(
    client: MemoryClient, chat_id: str
) -> None:
    client.update(chat_id, [PLAN], idempotency_key="turn-1")

    with pytest.raises(InvalidArgument) as refused:
        client.update(chat_id, [("user", "Something else entirely.")], idempotency_key="turn-1")

    assert refused.value.field == "idempotency_key"
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.field_violations] == ["idempotency_key"]
    assert refused.value.field_violations[0].description


@pytest.mark.parametrize(
    ("chat", "messages", "key", "field"),
    [
        ("", [PLAN], None, "chat_id"),
        ("has/slash", [PLAN], None, "chat_id"),
        ("x" * 129, [PLAN], None, "chat_id"),
        ("ok-chat", [], None, "messages"),
        ("ok-chat", [("user", "   ")], None, "messages[0].content"),
        ("ok-chat", [PLAN, ("user", "bell \x07 in text")], None, "messages[1].content"),
        ("ok-chat", [PLAN] * 101, None, "messages"),
        ("ok-chat", [PLAN], "key with spaces", "idempotency_key"),
        ("ok-chat", [Message("user", "fine", client_message_id="é" * 10)], None, "messages[0].client_message_id"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(
    client: MemoryClient, chat: str, messages: list, key: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        client.update(chat, messages, idempotency_key=key)

    assert refused.value.field == field
    assert refused.value.field_violations[0].description


def test_a_read_that_waits_for_nothing_is_refused_naming_wait_ms(
    client: MemoryClient, chat_id: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        client.get(chat_id, wait=1)

    assert refused.value.field == "wait_ms"


def test_after_job_id_must_be_a_job_id(client: MemoryClient, chat_id: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        client.get(chat_id, after_job_id="not-a-uuid", wait=1)

    assert refused.value.field == "after_job_id"


@pytest.mark.parametrize(
    "token",
    [
        "",  # none at all
        "not.a.jwt",
        sign_token(TENANT, "someone", secret="another-secret-of-at-least-32-bytes!!"),
        sign_token(TENANT, "someone", ttl_secs=-3600),  # expired an hour ago
    ],
    ids=["missing", "malformed", "wrongly-signed", "expired"],
)
def test_calls_without_a_valid_token_are_unauthenticated(
    make_client: Callable[..., MemoryClient], chat_id: str, token: str
) -> None:
    anonymous = make_client(token)

    with pytest.raises(Unauthenticated) as refused:
        anonymous.update(chat_id, [PLAN])
    with pytest.raises(Unauthenticated):
        anonymous.get(chat_id)

    assert isinstance(refused.value, ChatMemoryError)


def test_a_read_only_token_cannot_write(make_client: Callable[..., MemoryClient], user: str, chat_id: str) -> None:
    reader = make_client(sign_token(TENANT, user, scopes=("memory:read",)))

    with pytest.raises(PermissionDenied) as refused:
        reader.update(chat_id, [PLAN])

    assert "memory:write" in refused.value.message


def test_another_tenants_chat_and_job_are_not_found(
    client: MemoryClient, make_client: Callable[..., MemoryClient], user: str, chat_id: str
) -> None:
    job = client.update(chat_id, [PLAN])
    client.wait_for(job.job_id, timeout=20)
    intruder = make_client(sign_token(OTHER_TENANT, user))

    with pytest.raises(NotFound):
        intruder.get(chat_id)
    with pytest.raises(NotFound):
        intruder.status(job.job_id)
    assert intruder.delete(chat_id).memory_deleted is False

    # The owner's memory is untouched.
    assert client.get(chat_id).version == 1


def test_the_rate_limit_is_raised_with_the_servers_delay_and_retried_after_it(
    make_client: Callable[..., MemoryClient], user: str, chat_id: str, rate_limit_per_minute: int
) -> None:
    token = sign_token(TENANT, user)
    strict = make_client(token, retry=NO_RETRY)
    # Spend the user's whole budget (reads of a missing chat are cheap).
    limited = None
    for _ in range(rate_limit_per_minute * 2):
        try:
            strict.get(chat_id)
        except NotFound:
            continue
        except ResourceExhausted as e:
            limited = e
            break
    assert limited is not None, "the per-user budget was never exhausted"
    assert isinstance(limited, RateLimited)
    assert limited.reason == "RATE_LIMITED"  # google.rpc.ErrorInfo, domain chatmemory
    interval = 60.0 / rate_limit_per_minute
    assert limited.retry_after is not None
    assert 0 < limited.retry_after <= interval + 0.05  # RetryInfo's exact delay

    # Backoff alone (1 ms) would retry too early and be refused again; honouring
    # the server's delay, the second attempt gets the next token.
    patient = make_client(token, retry=RetryPolicy(max_attempts=2, initial_backoff=0.001, max_backoff=0.001))
    started = time.monotonic()
    with pytest.raises(NotFound):  # admitted: the answer is the chat's, not the limit's
        patient.get(chat_id)
    assert time.monotonic() - started >= limited.retry_after * 0.5


def test_an_unreachable_gateway_is_unavailable_after_bounded_retries(
    make_client: Callable[..., MemoryClient], token: str
) -> None:
    nowhere = MemoryClient(
        "http://127.0.0.1:1", token, retry=RetryPolicy(max_attempts=3, initial_backoff=0.05)
    )
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            nowhere.get("any-chat")
        assert time.monotonic() - started < 5
    finally:
        nowhere.close()


def test_a_call_past_its_deadline_raises_deadline_exceeded(client: MemoryClient, chat_id: str) -> None:
    job = client.update(chat_id, [PLAN])

    # A status answer takes a memory-store round trip and an audit row: over 1 ms.
    with pytest.raises(DeadlineExceeded):
        client.status(job.job_id, timeout=0.001)


class _ServerTimeout(grpc.RpcError):
    """A failed call as grpcio raises it: the server's status, no metadata."""

    def __init__(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return ()


@pytest.mark.parametrize("details", ["Timeout expired", "Timeout%20expired"])
def test_the_servers_own_timeout_is_deadline_exceeded_however_its_message_arrives(details: str) -> None:
    # tonic answers an elapsed grpc-timeout with CANCELLED "Timeout expired";
    # grpcio may hand the message over still percent-encoded.
    error = from_rpc_error(_ServerTimeout(details))
    assert isinstance(error, DeadlineExceeded)
    assert error.message == "Timeout expired"
    assert not isinstance(from_rpc_error(_ServerTimeout("client went away")), DeadlineExceeded)


def test_tls_with_the_ca_file_round_trips(tls_gateway: str, ca_cert: str, token: str, chat_id: str) -> None:
    with MemoryClient(tls_gateway, token, ca_cert=ca_cert) as secure:
        job = secure.update(chat_id, [PLAN])
        assert secure.wait_for(job.job_id, timeout=20).succeeded
        assert "Blue Shield" in secure.get(chat_id).user_confirmed


def test_tls_without_the_ca_is_refused(tls_gateway: str, token: str, chat_id: str) -> None:
    # The system's roots do not include the test CA.
    with MemoryClient(tls_gateway, token, retry=NO_RETRY) as untrusting:
        with pytest.raises(Unavailable):
            untrusting.get(chat_id)
