"""Python client of chat-memory: short-term memory for LLM agents.

>>> from chat_memory import MemoryClient
>>> with MemoryClient() as memory:           # CHAT_MEMORY_GATEWAY / _TOKEN / _CA_CERT
...     job = memory.update("chat-1", [("user", "My plan is Blue Shield PPO.")])
...     m = memory.get("chat-1", after_job_id=job.job_id, wait=10)
...     print(m.version, m.user_confirmed)

:class:`MemoryClient` is synchronous, :class:`AsyncMemoryClient` its asyncio twin.
Every failed call raises a :class:`ChatMemoryError` subclass named for its kind.
"""

from chat_memory._common import RetryPolicy, NO_RETRY
from chat_memory._types import (
    DeleteResult,
    JobState,
    JobStatus,
    Memory,
    Message,
    ReadCondition,
    Role,
    TokenCounts,
    UpdateResult,
    WatchEvent,
)
from chat_memory.aio import AsyncMemoryClient, AsyncWatch
from chat_memory import errors
from chat_memory.client import MemoryClient, Watch
from chat_memory.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ChatMemoryError,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    WaitTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "MemoryClient",
    "AsyncMemoryClient",
    "Watch",
    "AsyncWatch",
    "RetryPolicy",
    "NO_RETRY",
    "Message",
    "Role",
    "Memory",
    "TokenCounts",
    "ReadCondition",
    "JobState",
    "JobStatus",
    "UpdateResult",
    "DeleteResult",
    "WatchEvent",
]
# Every error class, as the errors module lists them.
__all__ += errors.__all__
