"""One exception class per failure kind, built from the gateway's gRPC status.

The gateway (``crates/gateway/src/error.rs``) sends, besides the code and message:

- ``INVALID_ARGUMENT``: a ``google.rpc.BadRequest`` detail with one field violation
  (``chat_id``, ``messages[3].content``, ``idempotency_key``, ...), in
  ``grpc-status-details-bin``. (A too-large job is INVALID_ARGUMENT without it:
  the message then starts with the field name.)
- ``RESOURCE_EXHAUSTED``: a ``google.rpc.ErrorInfo`` detail whose ``reason``
  says why (``RATE_LIMITED``, ``AUTH_FAILURES_LIMITED``, ``UPDATES_BACKLOGGED``,
  ``CHAT_BACKLOGGED``, ``QUEUE_FULL``, ``TOO_MANY_WATCH_STREAMS``,
  ``WATCH_CLIENT_TOO_SLOW``; domain ``chatmemory``), and, when the gateway knows
  a delay, a ``google.rpc.RetryInfo`` detail with it and ``retry-after``
  metadata in whole seconds.

Every error keeps the gRPC code, the message and the original ``grpc.RpcError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Type
from urllib.parse import unquote

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request, as the gateway named it."""

    field: str
    description: str


class ChatMemoryError(Exception):
    """Every error the client raises for a failed call."""

    #: The gRPC status code of the answer.
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        retry_after: Optional[float] = None,
        field_violations: Sequence[FieldViolation] = (),
        reason: Optional[str] = None,
        cause: Optional[BaseException] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        #: Seconds the server asked to wait before trying again (RetryInfo, else
        #: ``retry-after``); None when it said nothing.
        self.retry_after = retry_after
        #: The fields the server refused (INVALID_ARGUMENT), in its order.
        self.field_violations: List[FieldViolation] = list(field_violations)
        #: Why, machine-readable (``google.rpc.ErrorInfo.reason`` of the
        #: ``chatmemory`` domain), e.g. ``"RATE_LIMITED"``; None when not sent.
        self.reason = reason
        #: The grpc.RpcError this was made from.
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(ChatMemoryError):
    """The request was refused as invalid; nothing was done. See ``field_violations``."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    @property
    def field(self) -> Optional[str]:
        """The first refused field's name (the gateway names one)."""
        return self.field_violations[0].field if self.field_violations else None


class NotFound(ChatMemoryError):
    """No such chat memory or job, or it belongs to someone else (isolation looks the same)."""

    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(ChatMemoryError):
    """Missing, malformed, expired or wrongly signed bearer token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ChatMemoryError):
    """A valid token without the scope the call needs (the message names it)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ChatMemoryError):
    """Rate limit, or backpressure (too many updates waiting), or a full queue.

    ``reason`` says which (``RATE_LIMITED``, ``CHAT_BACKLOGGED``, ...);
    ``retry_after`` carries the server's delay when it gave one. Retried by the
    client (bounded) before it is raised.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


#: The rate limit answers RESOURCE_EXHAUSTED, as backpressure does: one class,
#: told apart by ``reason`` (``"RATE_LIMITED"`` for the rate limit).
RateLimited = ResourceExhausted

#: ``ErrorInfo.domain`` of the gateway's reasons.
ERROR_DOMAIN = "chatmemory"


class Unavailable(ChatMemoryError):
    """The gateway, or what it depends on (NATS, memory-store), cannot answer now.

    Retried by the client (bounded) before it is raised.
    """

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ChatMemoryError):
    """The call's deadline passed before an answer."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ChatMemoryError):
    code = grpc.StatusCode.CANCELLED


class Unimplemented(ChatMemoryError):
    """The gateway does not serve this call (an older server)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class OutOfRange(ChatMemoryError):
    """The request is larger than the transport decodes (over ``limits.max_request_bytes``)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class FailedPrecondition(ChatMemoryError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ChatMemoryError):
    code = grpc.StatusCode.ABORTED


class AlreadyExists(ChatMemoryError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Internal(ChatMemoryError):
    code = grpc.StatusCode.INTERNAL


class DataLoss(ChatMemoryError):
    code = grpc.StatusCode.DATA_LOSS


class Unknown(ChatMemoryError):
    code = grpc.StatusCode.UNKNOWN


class WaitTimeout(ChatMemoryError, TimeoutError):
    """:meth:`MemoryClient.wait_for` gave up before the job ended; ``status`` is the last seen."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, message: str, status: Any) -> None:
        super().__init__(message)
        self.status = status


_BY_CODE: Dict[grpc.StatusCode, Type[ChatMemoryError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unimplemented,
        OutOfRange,
        FailedPrecondition,
        Aborted,
        AlreadyExists,
        Internal,
        DataLoss,
        Unknown,
    )
}

#: gRPC metadata: (key, value) pairs (grpc and grpc.aio give different types).
Metadata = Iterable[Any]


def _metadata_value(metadata: Optional[Metadata], key: str) -> Optional[Any]:
    for k, v in metadata or ():
        if k.lower() == key:
            return v
    return None


@dataclass(frozen=True)
class Details:
    """What a status's ``grpc-status-details-bin`` (and ``retry-after``) carried."""

    retry_after: Optional[float]
    field_violations: List[FieldViolation]
    reason: Optional[str]


def parse_details(trailing: Optional[Metadata], initial: Optional[Metadata] = None) -> Details:
    """The retry delay, field violations and reason carried by a status's metadata."""
    retry_after: Optional[float] = None
    violations: List[FieldViolation] = []
    reason: Optional[str] = None
    raw = _metadata_value(trailing, _DETAILS_KEY) or _metadata_value(initial, _DETAILS_KEY)
    if raw:
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw if isinstance(raw, bytes) else bytes(raw, "latin-1"))
        except DecodeError:
            status = status_pb2.Status()
        for any_detail in status.details:
            if any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                any_detail.Unpack(info)
                retry_after = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_detail.Unpack(bad)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                )
            elif any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_detail.Unpack(info)
                if info.domain == ERROR_DOMAIN and info.reason:
                    reason = info.reason
    if retry_after is None:
        header = _metadata_value(trailing, "retry-after") or _metadata_value(initial, "retry-after")
        if header is not None:
            try:
                retry_after = max(0.0, float(header))
            except ValueError:
                retry_after = None
    return Details(retry_after, violations, reason)


def from_rpc_error(error: grpc.RpcError) -> ChatMemoryError:
    """The client's exception for a failed call (sync or asyncio)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    try:
        initial = error.initial_metadata() if hasattr(error, "initial_metadata") else None
    except Exception:  # a sync error without a response has none to give
        initial = None
    details = parse_details(trailing, initial)
    cls = _BY_CODE.get(code, ChatMemoryError)
    if code == grpc.StatusCode.CANCELLED and unquote(message or "") == "Timeout expired":
        # A tonic server answers a call whose grpc-timeout elapsed with
        # CANCELLED "Timeout expired" (the gRPC spec says DEADLINE_EXCEEDED);
        # it can reach the client before the client's own deadline fires, and
        # its message may arrive still percent-encoded ("Timeout%20expired").
        cls = DeadlineExceeded
        message = "Timeout expired"
    return cls(
        message or code.name,
        code=code,
        retry_after=details.retry_after,
        field_violations=details.field_violations,
        reason=details.reason,
        cause=error,
    )


__all__ = [
    "ChatMemoryError",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "Unauthenticated",
    "PermissionDenied",
    "ResourceExhausted",
    "RateLimited",
    "Unavailable",
    "DeadlineExceeded",
    "Cancelled",
    "Unimplemented",
    "OutOfRange",
    "FailedPrecondition",
    "Aborted",
    "AlreadyExists",
    "Internal",
    "DataLoss",
    "Unknown",
    "WaitTimeout",
]
