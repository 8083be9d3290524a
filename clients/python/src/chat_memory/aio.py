"""The asyncio client, :class:`AsyncMemoryClient` (same calls as :class:`MemoryClient`)."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncGenerator, Iterable, List, Optional, Sequence, Tuple

import grpc
import grpc.aio

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
from chat_memory.client import _Backoff, _get_request, _max_wait_allowed
from chat_memory.errors import (
    ChatMemoryError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    WaitTimeout,
    from_rpc_error,
)


class AsyncMemoryClient:
    """asyncio client of the chat-memory gateway. See :class:`MemoryClient`.

    Create it inside the event loop that uses it; ``async with`` closes it.
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
            self._channel = grpc.aio.secure_channel(target.address, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target.address, options=options)
        self._stub = pb_grpc.MemoryServiceStub(self._channel)
        self._token = token
        self.gateway = gateway
        self.timeout = timeout
        self.retry = retry
        # The longest server-side wait of one read (learnt from the gateway if lower).
        self._max_server_wait = common.MAX_SERVER_WAIT

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def __aenter__(self) -> "AsyncMemoryClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def update(
        self,
        chat_id: str,
        messages: Iterable[MessageLike],
        idempotency_key: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> UpdateResult:
        """See :meth:`MemoryClient.update`."""
        key = idempotency_key if idempotency_key is not None else common.new_idempotency_key()
        request = pb.UpdateMemoryRequest(
            chat_id=chat_id, messages=messages_to_pb(messages), idempotency_key=key
        )
        resp = await self._call(self._stub.UpdateMemory, request, timeout)
        return UpdateResult(
            job_id=resp.job_id, deduplicated=resp.deduplicated, idempotency_key=key, chat_id=chat_id
        )

    async def get(
        self,
        chat_id: str,
        min_version: Optional[int] = None,
        after_job_id: Optional[str] = None,
        wait: Optional[float] = None,
        *,
        timeout: Optional[float] = None,
    ) -> Memory:
        """See :meth:`MemoryClient.get`."""
        request = _get_request(chat_id, min_version, after_job_id, wait)
        resp = await self._call(self._stub.GetMemory, request, timeout, extra=wait or 0.0)
        return get_response_from_pb(resp)

    async def status(self, job_id: str, *, timeout: Optional[float] = None) -> JobStatus:
        """See :meth:`MemoryClient.status`."""
        resp = await self._call(
            self._stub.GetUpdateStatus, pb.GetUpdateStatusRequest(job_id=job_id), timeout
        )
        return status_from_pb(resp)

    async def wait_for(
        self, job_id: str, timeout: float = 30.0, *, chat_id: Optional[str] = None
    ) -> JobStatus:
        """See :meth:`MemoryClient.wait_for`."""
        deadline = time.monotonic() + timeout
        status = await self.status(job_id)
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
                condition = (await self.get(chat, after_job_id=job_id, wait=chunk)).condition
            except InvalidArgument as e:
                # A gateway whose limits.max_read_wait_ms is below the default.
                if e.field != "wait_ms" or chunk <= 0.1:
                    raise
                self._max_server_wait = _max_wait_allowed(e, chunk)
                continue
            except NotFound:
                condition = None
            if condition in (ReadCondition.MET, ReadCondition.JOB_FAILED):
                return await self.status(job_id)
            if condition is ReadCondition.TIMED_OUT:
                continue
            status = await self.status(job_id)
            if status.done:
                return status
            if time.monotonic() - started < chunk * 0.9:
                await asyncio.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))

    def watch(
        self, chat_id: str, from_version: int = 0, *, max_reconnects: int = 5
    ) -> "AsyncWatch":
        """See :meth:`MemoryClient.watch`; iterate with ``async for``."""
        return AsyncWatch(self, chat_id, from_version, max_reconnects)

    async def delete(self, chat_id: str, *, timeout: Optional[float] = None) -> DeleteResult:
        """See :meth:`MemoryClient.delete`."""
        resp = await self._call(
            self._stub.DeleteMemory, pb.DeleteMemoryRequest(chat_id=chat_id), timeout
        )
        return DeleteResult(memory_deleted=resp.memory_deleted, jobs_removed=resp.jobs_removed)

    async def _call(self, method, request, timeout: Optional[float], extra: float = 0.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout) + extra
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("the call's deadline passed before it could be retried")
            try:
                return await method(
                    request, timeout=remaining, metadata=common.call_metadata(self._token)
                )
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                delay = self.retry.delay(error, attempt)
                if delay is None or time.monotonic() + delay >= deadline:
                    raise error from e
                await asyncio.sleep(delay)


class AsyncWatch:
    """An open watch of one chat (see :meth:`AsyncMemoryClient.watch`)."""

    def __init__(
        self, client: AsyncMemoryClient, chat_id: str, from_version: int, max_reconnects: int
    ):
        self._client = client
        self.chat_id = chat_id
        #: The last version yielded (0 after a deletion): where a reconnect resumes.
        self.last_version = from_version
        #: Reconnections made so far.
        self.reconnects = 0
        self._max_reconnects = max_reconnects
        self._closed = False
        self._call: Optional[grpc.aio.UnaryStreamCall] = None
        self._events = self._run()

    def __aiter__(self) -> "AsyncWatch":
        return self

    async def __anext__(self) -> WatchEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Ends the watch; iteration then stops."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        await self._events.aclose()

    async def __aenter__(self) -> "AsyncWatch":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[WatchEvent, None]:
        policy = common.RetryPolicy(
            max_attempts=self._max_reconnects + 1,
            initial_backoff=self._client.retry.initial_backoff,
            max_backoff=self._client.retry.max_backoff,
            max_server_delay=self._client.retry.max_server_delay,
        )
        failures = 0
        while not self._closed:
            request = pb.WatchMemoryRequest(chat_id=self.chat_id, from_version=self.last_version)
            call = self._client._stub.WatchMemory(
                request, metadata=common.call_metadata(self._client._token)
            )
            self._call = call
            try:
                async for resp in call:
                    event = watch_event_from_pb(resp)
                    failures = 0
                    self.last_version = event.version
                    yield event
                return
            except grpc.RpcError as e:
                if self._closed:
                    return
                error: ChatMemoryError = from_rpc_error(e)
                failures += 1
                delay = policy.delay(error, failures)
                if delay is None:
                    raise error from e
                self.reconnects += 1
                await asyncio.sleep(delay)
            finally:
                call.cancel()


__all__: List[str] = ["AsyncMemoryClient", "AsyncWatch"]
