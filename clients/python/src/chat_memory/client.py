"""The synchronous client, :class:`MemoryClient`."""

from __future__ import annotations

import re
import threading
import time
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import grpc

from chat_memory import _common as common
from chat_memory._gen.chatmemory.v1 import memory_pb2 as pb
from chat_memory._gen.chatmemory.v1 import memory_pb2_grpc as pb_grpc
from chat_memory._types import (
    DeleteResult,
    JobStatus,
    Memory,
    MessageLike,
    ReadCondition,
    UpdateResult,
    WatchEvent,
    get_response_from_pb,
    messages_to_pb,
    status_from_pb,
    watch_event_from_pb,
)
from chat_memory.errors import (
    ChatMemoryError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    WaitTimeout,
    from_rpc_error,
)


class MemoryClient:
    """Client of the chat-memory gateway (``chatmemory.v1.MemoryService``).

    Arguments left out are read from the environment: ``CHAT_MEMORY_GATEWAY``
    (default ``http://127.0.0.1:50051``; ``https://`` for TLS),
    ``CHAT_MEMORY_TOKEN`` and ``CHAT_MEMORY_CA_CERT`` (a PEM file of the CA that
    signed the gateway's certificate; without it TLS trusts the system's roots).

    ``token`` is a bearer JWT, or a function returning the current one.
    ``timeout`` is each call's default deadline in seconds, retries included
    (a read's ``wait`` is added to it). ``retry`` governs retries of
    RESOURCE_EXHAUSTED and UNAVAILABLE (see :class:`RetryPolicy`).

    Thread-safe; one client (one HTTP/2 connection) serves a whole process.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        gateway: Optional[str] = None,
        token: common.TokenSource = None,
        *,
        ca_cert: Optional[str] = None,
        timeout: float = common.DEFAULT_TIMEOUT,
        retry: common.RetryPolicy = common.RetryPolicy(),
        channel_options: Sequence[Tuple[str, object]] = (),
    ) -> None:
        gateway, token, ca_cert = common.settings_from_env(gateway, token, ca_cert)
        target = common.parse_target(gateway)
        options = list(common.CHANNEL_OPTIONS) + list(channel_options)
        if target.secure:
            creds = common.channel_credentials(ca_cert)
            self._channel = grpc.secure_channel(target.address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target.address, options=options)
        self._stub = pb_grpc.MemoryServiceStub(self._channel)
        self._token = token
        self.gateway = gateway
        self.timeout = timeout
        self.retry = retry
        # The longest server-side wait of one read (learnt from the gateway if lower).
        self._max_server_wait = common.MAX_SERVER_WAIT

    # --- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "MemoryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- calls ---------------------------------------------------------------

    def update(
        self,
        chat_id: str,
        messages: Iterable[MessageLike],
        idempotency_key: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> UpdateResult:
        """Hands the chat's new messages over; returns once they are durably queued.

        Messages are :class:`Message` or ``(role, content)`` tuples. Without an
        ``idempotency_key`` the client makes one (a UUID), so its own retries
        never apply the messages twice; pass your own (a turn id) to make *your*
        retries safe too. The same key with other messages raises
        :class:`InvalidArgument` naming ``idempotency_key``.
        """
        key = idempotency_key if idempotency_key is not None else common.new_idempotency_key()
        request = pb.UpdateMemoryRequest(
            chat_id=chat_id, messages=messages_to_pb(messages), idempotency_key=key
        )
        resp = self._call(self._stub.UpdateMemory, request, timeout)
        return UpdateResult(
            job_id=resp.job_id, deduplicated=resp.deduplicated, idempotency_key=key, chat_id=chat_id
        )

    def get(
        self,
        chat_id: str,
        min_version: Optional[int] = None,
        after_job_id: Optional[str] = None,
        wait: Optional[float] = None,
        *,
        timeout: Optional[float] = None,
    ) -> Memory:
        """The chat's memory. Raises :class:`NotFound` when it has none.

        Read-your-writes: with ``min_version`` (a version seen before) or
        ``after_job_id`` (an :meth:`update`'s job) and ``wait`` (seconds; the
        gateway allows up to 10 by default), the gateway answers once that
        version is committed, or when the wait ends. ``Memory.condition`` says
        which: MET, TIMED_OUT (the memory is the current one) or JOB_FAILED.
        """
        request = _get_request(chat_id, min_version, after_job_id, wait)
        resp = self._call(self._stub.GetMemory, request, timeout, extra=wait or 0.0)
        return get_response_from_pb(resp)

    def status(self, job_id: str, *, timeout: Optional[float] = None) -> JobStatus:
        """The state of one update job. :class:`NotFound` for an unknown (or foreign) job."""
        resp = self._call(self._stub.GetUpdateStatus, pb.GetUpdateStatusRequest(job_id=job_id), timeout)
        return status_from_pb(resp)

    def wait_for(
        self, job_id: str, timeout: float = 30.0, *, chat_id: Optional[str] = None
    ) -> JobStatus:
        """Waits until the job has ended (succeeded or failed); returns its status.

        Waits on the server (GetMemory with ``after_job_id`` and a wait), not by
        polling. Against a gateway that cannot wait it falls back to
        :meth:`status` with backoff. Raises :class:`WaitTimeout` (a
        ``TimeoutError``) after ``timeout`` seconds. A failed job is returned,
        not raised: check ``status.succeeded``.
        """
        deadline = time.monotonic() + timeout
        status = self.status(job_id)
        if status.done:
            return status
        chat = chat_id or status.chat_id
        backoff = _Backoff()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"job {job_id} did not end within {timeout} s", status)
            chunk = min(remaining, self._max_server_wait)
            started = time.monotonic()
            try:
                condition = self.get(chat, after_job_id=job_id, wait=chunk).condition
            except InvalidArgument as e:
                # A gateway whose limits.max_read_wait_ms is below the default.
                if e.field != "wait_ms" or chunk <= 0.1:
                    raise
                self._max_server_wait = _max_wait_allowed(e, chunk)
                continue
            except NotFound:
                condition = None  # no memory yet (the wait ran out), or deleted meanwhile
            if condition in (ReadCondition.MET, ReadCondition.JOB_FAILED):
                return self.status(job_id)
            if condition is ReadCondition.TIMED_OUT:
                continue
            status = self.status(job_id)
            if status.done:
                return status
            if time.monotonic() - started < chunk * 0.9:
                # The server answered without waiting: back off instead of spinning.
                time.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))

    def watch(
        self, chat_id: str, from_version: int = 0, *, max_reconnects: int = 5
    ) -> "Watch":
        """Every new version of the chat's memory (and its deletion), as committed.

        Iterate over the returned :class:`Watch`; it starts with the current
        memory when ``from_version`` is 0. A deletion is the last event: the
        iteration then ends (a chat written again needs a new watch). After
        UNAVAILABLE (a gateway restart, a dropped connection) or
        RESOURCE_EXHAUSTED (a reader slower than the gateway's buffer) it
        reconnects by itself from the last version it yielded, up to
        ``max_reconnects`` times in a row. ``close()`` ends it.
        """
        return Watch(self, chat_id, from_version, max_reconnects)

    def delete(self, chat_id: str, *, timeout: Optional[float] = None) -> DeleteResult:
        """Removes the chat's memory and job records; queued updates are discarded."""
        resp = self._call(self._stub.DeleteMemory, pb.DeleteMemoryRequest(chat_id=chat_id), timeout)
        return DeleteResult(memory_deleted=resp.memory_deleted, jobs_removed=resp.jobs_removed)

    # --- plumbing ------------------------------------------------------------

    def _call(self, method, request, timeout: Optional[float], extra: float = 0.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout) + extra
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("the call's deadline passed before it could be retried")
            try:
                return method(
                    request, timeout=remaining, metadata=common.call_metadata(self._token)
                )
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                delay = self.retry.delay(error, attempt)
                if delay is None or time.monotonic() + delay >= deadline:
                    raise error from e
                time.sleep(delay)


class Watch(Iterator[WatchEvent]):
    """An open watch of one chat (see :meth:`MemoryClient.watch`)."""

    def __init__(self, client: MemoryClient, chat_id: str, from_version: int, max_reconnects: int):
        self._client = client
        self.chat_id = chat_id
        #: The last version yielded (0 after a deletion): where a reconnect resumes.
        self.last_version = from_version
        #: Reconnections made so far.
        self.reconnects = 0
        self._max_reconnects = max_reconnects
        self._closed = threading.Event()
        self._call: Optional[grpc.Call] = None
        self._events = self._run()

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> WatchEvent:
        return next(self._events)

    def close(self) -> None:
        """Ends the watch (from any thread); iteration then stops."""
        self._closed.set()
        call = self._call
        if call is not None:
            call.cancel()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> Iterator[WatchEvent]:
        policy = common.RetryPolicy(
            max_attempts=self._max_reconnects + 1,
            initial_backoff=self._client.retry.initial_backoff,
            max_backoff=self._client.retry.max_backoff,
            max_server_delay=self._client.retry.max_server_delay,
        )
        failures = 0
        while not self._closed.is_set():
            request = pb.WatchMemoryRequest(chat_id=self.chat_id, from_version=self.last_version)
            call = self._client._stub.WatchMemory(
                request, metadata=common.call_metadata(self._client._token)
            )
            self._call = call
            if self._closed.is_set():
                call.cancel()
                return
            try:
                for resp in call:
                    event = watch_event_from_pb(resp)
                    failures = 0
                    self.last_version = event.version
                    yield event
                return  # the server ended the stream
            except GeneratorExit:  # the iterator was dropped: end the stream too
                call.cancel()
                raise
            except grpc.RpcError as e:
                if self._closed.is_set():
                    return
                error: ChatMemoryError = from_rpc_error(e)
                failures += 1
                delay = policy.delay(error, failures)
                if delay is None:
                    raise error from e
                self.reconnects += 1
                if self._closed.wait(delay):
                    return


class _Backoff:
    def __init__(self, first: float = 0.05, cap: float = 1.0) -> None:
        self._next = first
        self._cap = cap

    def next(self) -> float:
        value = self._next
        self._next = min(self._cap, self._next * 2)
        return value


def _max_wait_allowed(error: InvalidArgument, tried: float) -> float:
    """The gateway's read-wait limit from its refusal ("must be at most N"), in seconds."""
    for v in error.field_violations:
        match = re.search(r"at most (\d+)", v.description)
        if v.field == "wait_ms" and match:
            return max(0.001, int(match.group(1)) / 1000)
    return tried / 2


def _get_request(
    chat_id: str, min_version: Optional[int], after_job_id: Optional[str], wait: Optional[float]
) -> pb.GetMemoryRequest:
    request = pb.GetMemoryRequest(chat_id=chat_id)
    if min_version:
        request.min_version = min_version
    if after_job_id:
        request.after_job_id = after_job_id
    if wait:
        if wait < 0:
            raise ValueError("wait is a number of seconds >= 0")
        request.wait_ms = int(round(wait * 1000))
    return request


__all__: List[str] = ["MemoryClient", "Watch"]
