"""watch(): new versions as they are committed, and resuming from a version."""

from __future__ import annotations

import queue
import signal
import threading
from typing import Iterator

import pytest

from chat_memory import MemoryClient, Watch, WatchEvent

from conftest import GatewayProcess

EVENT_TIMEOUT = 20.0
_ENDED = object()


class Events:
    """Reads a watch on a thread, so the test waits for each event with a deadline."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self._queue: "queue.Queue[object]" = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for event in self.watch:
                self._queue.put(event)
            self._queue.put(_ENDED)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self._queue.put(e)

    def next(self, timeout: float = EVENT_TIMEOUT) -> WatchEvent:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no watch event within {timeout} s")
        if isinstance(item, BaseException):
            raise item
        if item is _ENDED:
            pytest.fail("the watch stream ended (the server closed it)")
        assert isinstance(item, WatchEvent)
        return item

    def ended(self, timeout: float) -> bool:
        """True once the stream ended by itself (no further event, no error)."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False
        if isinstance(item, BaseException):
            raise item
        return item is _ENDED

    def close(self) -> None:
        self.watch.close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "the watch did not end when closed"


@pytest.fixture
def events(client: MemoryClient) -> Iterator:
    opened = []

    def open_(chat_id: str, from_version: int = 0) -> Events:
        e = Events(client.watch(chat_id, from_version=from_version))
        opened.append(e)
        return e

    yield open_
    for e in opened:
        e.close()


def test_a_watch_receives_each_new_version(client: MemoryClient, events, chat_id: str) -> None:
    watch = events(chat_id)
    first = client.update(chat_id, [("user", "My plan is Blue Shield PPO.")])

    event = watch.next()

    assert event.deleted is False
    assert event.chat_id == chat_id
    assert event.version == 1
    assert event.last_applied_job_id == first.job_id
    assert event.memory is not None and "Blue Shield" in event.memory.user_confirmed
    # Nothing else was sent: nothing pending when the version was made.
    assert event.memory.pending_jobs == 0

    second = client.update(chat_id, [("user", "My copay is $20.")])
    event = watch.next()
    assert event.version == 2
    assert event.last_applied_job_id == second.job_id
    assert event.memory is not None and event.memory.pending_jobs == 0
    assert watch.watch.last_version == 2


def test_a_watch_from_zero_starts_with_the_current_memory(client: MemoryClient, events, chat_id: str) -> None:
    job = client.update(chat_id, [("user", "My plan is Blue Shield PPO.")])
    client.wait_for(job.job_id, timeout=20)

    event = events(chat_id).next()

    assert event.version == 1
    assert event.last_applied_job_id == job.job_id
    assert event.memory is not None and event.memory.pending_jobs == 0


def test_a_watch_resumed_from_a_version_sends_only_later_ones(
    client: MemoryClient, events, chat_id: str
) -> None:
    for text in ("My plan is Blue Shield PPO.", "My copay is $20."):
        client.wait_for(client.update(chat_id, [("user", text)]).job_id, timeout=20)

    resumed = events(chat_id, from_version=1)
    event = resumed.next()
    assert event.version == 2  # version 1 was seen before the "reconnect"

    third = client.update(chat_id, [("user", "My deductible is $1,500.")])
    event = resumed.next()
    assert event.version == 3
    assert event.last_applied_job_id == third.job_id


def test_a_watch_reports_the_deletion_and_then_ends(client: MemoryClient, events, chat_id: str) -> None:
    client.wait_for(client.update(chat_id, [("user", "My plan is Blue Shield PPO.")]).job_id, timeout=20)
    watch = events(chat_id, from_version=1)

    client.delete(chat_id)
    event = watch.next()

    assert event.deleted is True
    assert event.memory is None
    assert event.version == 0
    # A deletion ends the stream: the chat may next be written (and owned) by
    # someone else, so following it again takes a new watch (and its checks).
    assert watch.ended(timeout=EVENT_TIMEOUT)


def test_a_new_watch_follows_a_chat_written_again_after_its_deletion(
    client: MemoryClient, events, chat_id: str
) -> None:
    client.wait_for(client.update(chat_id, [("user", "My plan is Blue Shield PPO.")]).job_id, timeout=20)
    client.delete(chat_id)
    watch = events(chat_id)

    job = client.update(chat_id, [("user", "Starting over: I am on Kaiser now.")])
    event = watch.next()

    assert event.version == 1
    assert event.last_applied_job_id == job.job_id
    assert event.memory is not None and "Kaiser" in event.memory.user_confirmed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["gateway-restarted", "gateway-killed"])
def test_a_watch_reconnects_when_its_gateway_comes_back_and_resumes_after_its_last_version(
    client: MemoryClient, own_gateway: GatewayProcess, token: str, chat_id: str, sig: int
) -> None:
    # Watch through a gateway of the test's own; write through the stack's.
    client.wait_for(client.update(chat_id, [("user", "My plan is Blue Shield PPO.")]).job_id, timeout=20)
    with MemoryClient(own_gateway.address, token) as via_own:
        watch = Events(via_own.watch(chat_id, max_reconnects=10))
        try:
            assert watch.next().version == 1

            own_gateway.stop(sig)
            second = client.update(chat_id, [("user", "My copay is $20.")])
            client.wait_for(second.job_id, timeout=20)  # committed while the watch is cut off
            own_gateway.start()

            event = watch.next()
            assert event.version == 2  # not version 1 again: resumed from the last one seen
            assert event.last_applied_job_id == second.job_id
            assert watch.watch.reconnects >= 1

            third = client.update(chat_id, [("user", "My deductible is $1,500.")])
            event = watch.next()
            assert event.version == 3
            assert event.last_applied_job_id == third.job_id
        finally:
            watch.close()
