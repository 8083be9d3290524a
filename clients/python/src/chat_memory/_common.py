"""What the sync and asyncio clients share: where to connect, credentials, retries."""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import grpc

from chat_memory.errors import ChatMemoryError, ResourceExhausted, Unavailable

DEFAULT_GATEWAY = "http://127.0.0.1:50051"
#: Deadline of one call (each attempt and the retries' waits together), seconds.
DEFAULT_TIMEOUT = 10.0
#: The longest one GetMemory waits server-side: the gateway's default
#: ``limits.max_read_wait_ms``. Longer waits are made of several reads.
MAX_SERVER_WAIT = 10.0

#: A token, or a function returning the current one (called per call, so a
#: rotating service token needs no new client).
TokenSource = Union[str, Callable[[], str], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of RESOURCE_EXHAUSTED and UNAVAILABLE.

    The server's delay (``google.rpc.RetryInfo``, else ``retry-after``) is honoured
    when it gives one; otherwise the wait doubles from ``initial_backoff`` (with jitter).
    A retry whose wait would pass the call's deadline, or exceed
    ``max_server_delay``, is not made: the error is raised at once instead.
    """

    #: Attempts in all, the first included; 1 turns retries off.
    max_attempts: int = 5
    initial_backoff: float = 0.25
    max_backoff: float = 4.0
    #: Longest server-requested delay the client waits out by itself.
    max_server_delay: float = 30.0

    def delay(self, error: ChatMemoryError, attempt: int) -> Optional[float]:
        """Seconds to wait before attempt ``attempt + 1``, or None for no retry."""
        if not isinstance(error, (ResourceExhausted, Unavailable)):
            return None
        if attempt >= self.max_attempts:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_server_delay:
                return None
            return error.retry_after
        cap = min(self.max_backoff, self.initial_backoff * (2 ** (attempt - 1)))
        return cap / 2 + random.uniform(0, cap / 2)


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class Target:
    address: str
    secure: bool


def parse_target(gateway: str) -> Target:
    """``http://host:port`` (plaintext), ``https://host:port`` (TLS) or ``host:port``."""
    if gateway.startswith("https://"):
        return Target(gateway[len("https://") :].rstrip("/"), True)
    if gateway.startswith("http://"):
        return Target(gateway[len("http://") :].rstrip("/"), False)
    if "://" in gateway:
        raise ValueError(f"gateway {gateway!r}: use http://host:port or https://host:port")
    return Target(gateway.rstrip("/"), False)


def channel_credentials(ca_cert: Optional[str]) -> grpc.ChannelCredentials:
    """TLS trusting ``ca_cert`` (a PEM file), or the system's roots when None."""
    if ca_cert is None:
        return grpc.ssl_channel_credentials()
    with open(ca_cert, "rb") as f:
        return grpc.ssl_channel_credentials(root_certificates=f.read())


def settings_from_env(
    gateway: Optional[str], token: TokenSource, ca_cert: Optional[str]
) -> Tuple[str, TokenSource, Optional[str]]:
    return (
        gateway or os.environ.get("CHAT_MEMORY_GATEWAY") or DEFAULT_GATEWAY,
        token if token is not None else os.environ.get("CHAT_MEMORY_TOKEN"),
        ca_cert if ca_cert is not None else (os.environ.get("CHAT_MEMORY_CA_CERT") or None),
    )


def call_metadata(token: TokenSource) -> List[Tuple[str, str]]:
    value = token() if callable(token) else token
    if not value:
        return []
    return [("authorization", f"Bearer {value}")]


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


CHANNEL_OPTIONS = [
    # Watch streams stay open for long: keep the connection alive through idle NATs.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # The client does its own retries (it reads the server's RetryInfo).
    ("grpc.enable_retries", 0),
]
