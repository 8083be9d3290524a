"""What the client takes and returns: plain dataclasses, no protobuf types."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from chat_memory._gen.chatmemory.v1 import memory_pb2 as pb


class Role(str, enum.Enum):
    """Who wrote a message."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


_ROLE_TO_PB = {
    Role.USER: pb.ROLE_USER,
    Role.ASSISTANT: pb.ROLE_ASSISTANT,
    Role.SYSTEM: pb.ROLE_SYSTEM,
    Role.TOOL: pb.ROLE_TOOL,
}


@dataclass(frozen=True)
class Message:
    """One chat message. ``role`` is a :class:`Role` or its name (``"user"``)."""

    role: Union[Role, str]
    content: str
    #: Optional id of the message in the caller's system, kept as provenance.
    client_message_id: Optional[str] = None
    #: Optional time the message was sent.
    sent_at: Optional[datetime] = None


#: A message as a dataclass, or as a ``(role, content)`` tuple.
MessageLike = Union[Message, Tuple[str, str], Tuple[Role, str]]


class ReadCondition(enum.Enum):
    """Whether a read's ``min_version`` / ``after_job_id`` was reached."""

    #: The memory has at least ``min_version`` / includes ``after_job_id``.
    MET = "met"
    #: The wait ended first; the memory returned is the current one.
    TIMED_OUT = "timed_out"
    #: ``after_job_id`` failed (see :meth:`MemoryClient.status`); the memory is the current one.
    JOB_FAILED = "job_failed"


_CONDITION_FROM_PB = {
    pb.READ_CONDITION_MET: ReadCondition.MET,
    pb.READ_CONDITION_TIMED_OUT: ReadCondition.TIMED_OUT,
    pb.READ_CONDITION_JOB_FAILED: ReadCondition.JOB_FAILED,
}


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNSPECIFIED = "unspecified"

    @property
    def done(self) -> bool:
        """The job has ended (succeeded or failed) and will not change again."""
        return self in (JobState.SUCCEEDED, JobState.FAILED)


_STATE_FROM_PB = {
    pb.JOB_STATE_QUEUED: JobState.QUEUED,
    pb.JOB_STATE_RUNNING: JobState.RUNNING,
    pb.JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    pb.JOB_STATE_FAILED: JobState.FAILED,
}


@dataclass(frozen=True)
class UpdateResult:
    """An accepted update: the job that will fold the messages into the memory."""

    job_id: str
    #: True when this repeated an earlier request with the same idempotency key.
    deduplicated: bool
    #: The key sent (the caller's, or the one the client made).
    idempotency_key: str
    chat_id: str


@dataclass(frozen=True)
class TokenCounts:
    user_confirmed: int
    llm_inferred: int
    general_summary: int
    total: int


@dataclass(frozen=True)
class Memory:
    """A chat's memory at one version, and how fresh it is."""

    chat_id: str
    #: Facts the user stated or explicitly confirmed.
    user_confirmed: str
    #: What the assistant inferred and the user has not confirmed. Never fact.
    llm_inferred: str
    #: Rolling summary of the conversation.
    general_summary: str
    tokens: TokenCounts
    #: Increments by one with every applied update (a deleted chat starts again at 1).
    version: int
    updated_at: Optional[datetime]
    #: The job whose messages were folded in last.
    last_applied_job_id: str
    #: Accepted updates of the chat not applied yet; in a watch event, when the
    #: version was made (None when not known: a commit of an older worker).
    pending_jobs: Optional[int]
    #: Set when the read asked for ``min_version`` or ``after_job_id``.
    condition: Optional[ReadCondition] = None


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    chat_id: str
    state: JobState
    #: Delivery attempts so far.
    attempts: int
    #: Why the job failed (or the last transient error); empty otherwise.
    error: str
    #: The memory version this job produced, once it succeeded.
    resulting_version: Optional[int]
    accepted_at: Optional[datetime]
    updated_at: Optional[datetime]
    #: The summarizer call that applied it (updates folded together share it).
    applied_in_call: str

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED


@dataclass(frozen=True)
class DeleteResult:
    #: True if a memory existed and was removed.
    memory_deleted: bool
    jobs_removed: int


@dataclass(frozen=True)
class WatchEvent:
    """One event of :meth:`MemoryClient.watch`: a new version, or the deletion."""

    chat_id: str
    #: The memory at its new version; None when ``deleted``.
    memory: Optional[Memory]
    last_applied_job_id: str
    #: The chat's memory was deleted. The watch's last event: the stream ends
    #: after it (a later update starts again at version 1, seen by a new watch).
    deleted: bool

    @property
    def version(self) -> int:
        """The memory's version, 0 for a deletion."""
        return self.memory.version if self.memory is not None else 0


# --- conversions -------------------------------------------------------------


def _role(role: Union[Role, str]) -> pb.Role:
    try:
        return _ROLE_TO_PB[Role(role.value if isinstance(role, Role) else str(role).lower())]
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {role!r} (one of {names})") from None


def message_to_pb(message: MessageLike) -> pb.ChatMessage:
    if isinstance(message, Message):
        m = message
    elif isinstance(message, (tuple, list)) and len(message) == 2:
        m = Message(role=message[0], content=message[1])
    else:
        raise TypeError(f"a message is a Message or a (role, content) tuple, not {message!r}")
    out = pb.ChatMessage(role=_role(m.role), content=m.content)
    if m.client_message_id:
        out.client_message_id = m.client_message_id
    if m.sent_at is not None:
        sent = m.sent_at if m.sent_at.tzinfo else m.sent_at.replace(tzinfo=timezone.utc)
        out.sent_at.FromDatetime(sent.astimezone(timezone.utc))
    return out


def messages_to_pb(messages: Iterable[MessageLike]) -> List[pb.ChatMessage]:
    if isinstance(messages, (str, bytes, Message)):
        raise TypeError("messages is a sequence of messages")
    return [message_to_pb(m) for m in messages]


def _time(message: object, field: str) -> Optional[datetime]:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    ts = getattr(message, field)
    return ts.ToDatetime(tzinfo=timezone.utc)


def memory_from_pb(
    chat_id: str,
    memory: pb.Memory,
    last_applied_job_id: str,
    pending_jobs: Optional[int],
    condition: Optional[ReadCondition],
) -> Memory:
    t = memory.token_counts
    return Memory(
        chat_id=chat_id,
        user_confirmed=memory.user_confirmed,
        llm_inferred=memory.llm_inferred,
        general_summary=memory.general_summary,
        tokens=TokenCounts(t.user_confirmed, t.llm_inferred, t.general_summary, t.total),
        version=memory.version,
        updated_at=_time(memory, "updated_at"),
        last_applied_job_id=last_applied_job_id,
        pending_jobs=pending_jobs,
        condition=condition,
    )


def get_response_from_pb(resp: pb.GetMemoryResponse) -> Memory:
    return memory_from_pb(
        resp.chat_id,
        resp.memory,
        resp.freshness.last_applied_job_id,
        resp.freshness.pending_jobs,
        _CONDITION_FROM_PB.get(resp.condition),
    )


def status_from_pb(resp: pb.GetUpdateStatusResponse) -> JobStatus:
    return JobStatus(
        job_id=resp.job_id,
        chat_id=resp.chat_id,
        state=_STATE_FROM_PB.get(resp.state, JobState.UNSPECIFIED),
        attempts=resp.attempts,
        error=resp.error,
        resulting_version=resp.resulting_version if resp.HasField("resulting_version") else None,
        accepted_at=_time(resp, "accepted_at"),
        updated_at=_time(resp, "updated_at"),
        applied_in_call=resp.applied_in_call,
    )


def watch_event_from_pb(resp: pb.WatchMemoryResponse) -> WatchEvent:
    memory = None
    if not resp.deleted and resp.HasField("memory"):
        # The pending count when the version was made (None: not known).
        pending = resp.freshness.pending_jobs if resp.HasField("freshness") else None
        memory = memory_from_pb(resp.chat_id, resp.memory, resp.last_applied_job_id, pending, None)
    return WatchEvent(
        chat_id=resp.chat_id,
        memory=memory,
        last_applied_job_id=resp.last_applied_job_id,
        deleted=resp.deleted,
    )


__all__: Sequence[str] = (
    "Role",
    "Message",
    "MessageLike",
    "ReadCondition",
    "JobState",
    "UpdateResult",
    "TokenCounts",
    "Memory",
    "JobStatus",
    "DeleteResult",
    "WatchEvent",
)
