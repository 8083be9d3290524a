"""watch(): new versions as they are committed, and resuming from a version."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import pytest

from chat_memory import MemoryClient, Watch, WatchEvent

EVENT_TIMEOUT = 20.0


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
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self._queue.put(e)

    def next(self, timeout: float = EVENT_TIMEOUT) -> WatchEvent:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no watch event within {timeout} s")
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, WatchEvent)
        return item

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

    second = client.update(chat_id, [("user", "My copay is $20.")])
    event = watch.next()
    assert event.version == 2
    assert event.last_applied_job_id == second.job_id
    assert watch.watch.last_version == 2


def test_a_watch_from_zero_starts_with_the_current_memory(client: MemoryClient, events, chat_id: str) -> None:
    job = client.update(chat_id, [("user", "My plan is Blue Shield PPO.")])
    client.wait_for(job.job_id, timeout=20)

    event = events(chat_id).next()

    assert event.version == 1
    assert event.last_applied_job_id == job.job_id


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


def test_a_watch_reports_the_deletion(client: MemoryClient, events, chat_id: str) -> None:
    client.wait_for(client.update(chat_id, [("user", "My plan is Blue Shield PPO.")]).job_id, timeout=20)
    watch = events(chat_id, from_version=1)

    client.delete(chat_id)
    event = watch.next()

    assert event.deleted is True
    assert event.memory is None
    assert watch.watch.last_version == 0  # a later update starts again at 1

    client.update(chat_id, [("user", "Starting over.")])
    assert watch.next().version == 1
