"""The synchronous client against the real stack: updates, reads, status, delete."""

from __future__ import annotations

import time
import uuid

import pytest

from chat_memory import (
    JobState,
    MemoryClient,
    Message,
    NotFound,
    ReadCondition,
    Role,
)

PLAN = ("user", "Hi, I'm on the Aetna Choice POS II plan and my member ID is W123456789.")
GUESS = ("assistant", "It sounds like you may have already met your deductible this year.")


def test_an_update_is_read_back_once_its_job_is_applied(client: MemoryClient, chat_id: str) -> None:
    job = client.update(chat_id, [PLAN, GUESS])

    memory = client.get(chat_id, after_job_id=job.job_id, wait=10)

    assert memory.condition is ReadCondition.MET
    assert memory.chat_id == chat_id
    assert memory.version == 1
    assert memory.last_applied_job_id == job.job_id
    assert memory.pending_jobs == 0
    assert "W123456789" in memory.user_confirmed
    assert "deductible" in memory.llm_inferred
    assert "deductible" not in memory.user_confirmed  # the assistant's guess is no fact
    assert memory.tokens.total > 0
    assert memory.updated_at is not None


def test_an_update_without_a_key_gets_one_made_by_the_client(client: MemoryClient, chat_id: str) -> None:
    first = client.update(chat_id, [PLAN])
    second = client.update(chat_id, [PLAN])

    assert first.idempotency_key and second.idempotency_key
    assert first.idempotency_key != second.idempotency_key
    assert first.job_id != second.job_id
    assert not first.deduplicated and not second.deduplicated


def test_wait_for_returns_the_succeeded_status_with_the_version_it_made(
    client: MemoryClient, chat_id: str
) -> None:
    job = client.update(chat_id, [Message(Role.USER, "My deductible is $1,500.", client_message_id="m-1")])

    status = client.wait_for(job.job_id, timeout=20)

    assert status.state is JobState.SUCCEEDED
    assert status.succeeded and status.done
    assert status.job_id == job.job_id
    assert status.chat_id == chat_id
    assert status.resulting_version == 1
    assert status.attempts >= 1
    assert status.applied_in_call
    assert client.get(chat_id).version == 1


def test_status_of_a_just_accepted_job_names_its_chat(client: MemoryClient, chat_id: str) -> None:
    job = client.update(chat_id, [PLAN])

    status = client.status(job.job_id)

    assert status.job_id == job.job_id
    assert status.chat_id == chat_id
    assert status.state in (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)
    assert status.accepted_at is not None


def test_status_of_an_unknown_job_is_not_found(client: MemoryClient) -> None:
    with pytest.raises(NotFound):
        client.status(str(uuid.uuid4()))


def test_a_chat_without_memory_is_not_found(client: MemoryClient, chat_id: str) -> None:
    with pytest.raises(NotFound):
        client.get(chat_id)


def test_min_version_reads_your_own_later_write(client: MemoryClient, chat_id: str) -> None:
    first = client.update(chat_id, [PLAN])
    v1 = client.get(chat_id, after_job_id=first.job_id, wait=10)
    client.update(chat_id, [("user", "I also have a dental plan with Delta Dental.")])

    v2 = client.get(chat_id, min_version=v1.version + 1, wait=10)

    assert v2.condition is ReadCondition.MET
    assert v2.version >= 2
    assert "Delta Dental" in v2.user_confirmed


def test_a_version_not_reached_in_time_answers_the_current_memory_as_timed_out(
    client: MemoryClient, chat_id: str
) -> None:
    job = client.update(chat_id, [PLAN])
    client.wait_for(job.job_id, timeout=20)

    started = time.monotonic()
    memory = client.get(chat_id, min_version=50, wait=0.5)
    elapsed = time.monotonic() - started

    assert memory.condition is ReadCondition.TIMED_OUT
    assert memory.version == 1
    assert elapsed >= 0.4  # it waited on the server for the version


def test_a_read_without_a_condition_carries_none(client: MemoryClient, chat_id: str) -> None:
    job = client.update(chat_id, [PLAN])
    client.wait_for(job.job_id, timeout=20)

    assert client.get(chat_id).condition is None


def test_delete_removes_the_memory_and_its_jobs(client: MemoryClient, chat_id: str) -> None:
    job = client.update(chat_id, [PLAN])
    client.wait_for(job.job_id, timeout=20)

    deleted = client.delete(chat_id)

    assert deleted.memory_deleted is True
    assert deleted.jobs_removed >= 1
    with pytest.raises(NotFound):
        client.get(chat_id)
    with pytest.raises(NotFound):
        client.status(job.job_id)
    assert client.delete(chat_id).memory_deleted is False


def test_a_deleted_chat_starts_again_at_version_one(client: MemoryClient, chat_id: str) -> None:
    client.wait_for(client.update(chat_id, [PLAN]).job_id, timeout=20)
    client.delete(chat_id)

    job = client.update(chat_id, [("user", "New conversation: I am on Kaiser now.")])
    memory = client.get(chat_id, after_job_id=job.job_id, wait=10)

    assert memory.version == 1
    assert "Kaiser" in memory.user_confirmed
    assert "W123456789" not in memory.user_confirmed


def test_messages_are_refused_client_side_when_malformed(client: MemoryClient, chat_id: str) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        client.update(chat_id, [("narrator", "Once upon a time")])
    with pytest.raises(TypeError):
        client.update(chat_id, "just a string")  # type: ignore[arg-type]
    with pytest.raises(NotFound):  # nothing reached the server
        client.get(chat_id)
