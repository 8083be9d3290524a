"""The asyncio client: the main calls, each against the real stack.

Each test runs its coroutine with asyncio.run (no pytest plugin needed).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chat_memory import (
    AsyncMemoryClient,
    InvalidArgument,
    JobState,
    NotFound,
    ReadCondition,
    Unauthenticated,
)

from conftest import OTHER_TENANT, sign_token

PLAN = ("user", "Hi, my member ID is W123456789 and I'm on Aetna Choice POS II.")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def test_async_update_then_read_back(gateway: str, token: str, chat_id: str) -> None:
    async def scenario() -> None:
        async with AsyncMemoryClient(gateway, token) as client:
            job = await client.update(chat_id, [PLAN])
            memory = await client.get(chat_id, after_job_id=job.job_id, wait=10)
            assert memory.condition is ReadCondition.MET
            assert memory.version == 1
            assert "W123456789" in memory.user_confirmed

    run(scenario())


def test_async_status_wait_for_and_delete(gateway: str, token: str, chat_id: str) -> None:
    async def scenario() -> None:
        async with AsyncMemoryClient(gateway, token) as client:
            job = await client.update(chat_id, [PLAN], idempotency_key="turn-1")
            status = await client.status(job.job_id)
            assert status.chat_id == chat_id
            done = await client.wait_for(job.job_id, timeout=20)
            assert done.state is JobState.SUCCEEDED
            assert done.resulting_version == 1
            again = await client.update(chat_id, [PLAN], idempotency_key="turn-1")
            assert again.deduplicated and again.job_id == job.job_id
            deleted = await client.delete(chat_id)
            assert deleted.memory_deleted
            with pytest.raises(NotFound):
                await client.get(chat_id)

    run(scenario())


def test_async_errors_are_the_same_classes(gateway: str, token: str, user: str, chat_id: str) -> None:
    async def scenario() -> None:
        async with AsyncMemoryClient(gateway, token) as client:
            with pytest.raises(InvalidArgument) as refused:
                await client.update(chat_id, [("user", "ok"), ("assistant", " ")])
            assert refused.value.field == "messages[1].content"
            with pytest.raises(NotFound):
                await client.status(str(uuid.uuid4()))
        async with AsyncMemoryClient(gateway, "") as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.get(chat_id)
        async with AsyncMemoryClient(gateway, sign_token(OTHER_TENANT, user)) as other:
            with pytest.raises(NotFound):
                await other.get(chat_id)

    run(scenario())


def test_async_watch_receives_new_versions_and_resumes(gateway: str, token: str, chat_id: str) -> None:
    async def scenario() -> None:
        async with AsyncMemoryClient(gateway, token) as client:
            watch = client.watch(chat_id)
            first = await client.update(chat_id, [PLAN])
            event = await asyncio.wait_for(watch.__anext__(), timeout=20)
            assert event.version == 1 and event.last_applied_job_id == first.job_id
            await watch.aclose()

            second = await client.update(chat_id, [("user", "My copay is $20.")])
            await client.wait_for(second.job_id, timeout=20)
            async with client.watch(chat_id, from_version=1) as resumed:
                event = await asyncio.wait_for(resumed.__anext__(), timeout=20)
                assert event.version == 2
                assert event.last_applied_job_id == second.job_id

    run(scenario())
