"""Fixtures of the client's suite: the real stack that scripts/python-tests.sh starts.

Environment (set by the script):
  CHAT_MEMORY_TEST_GATEWAY        plaintext gateway, e.g. http://127.0.0.1:21051
  CHAT_MEMORY_TEST_TLS_GATEWAY    the same stack behind a TLS gateway (https://localhost:...)
  CHAT_MEMORY_TEST_CA_CERT        the CA that signed the TLS gateway's certificate
  CHAT_MEMORY_TEST_HS256_SECRET   the gateways' auth.hs256_secret, to sign test tokens
  CHAT_MEMORY_TEST_RATE_LIMIT_PER_MINUTE  the gateways' rate_limit.per_minute

Every test is its own user (a fresh ``sub``), so per-user rate limits never
couple tests, and writes its own chats.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from typing import Callable, Iterator, Sequence

import pytest

from chat_memory import MemoryClient

TENANT = "pytest"
OTHER_TENANT = "pytest-other"
READ_WRITE = ("memory:read", "memory:write")


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the suite with scripts/python-tests.sh", returncode=2)
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_token(
    tenant: str,
    user: str,
    scopes: Sequence[str] = READ_WRITE,
    ttl_secs: int = 600,
    secret: str | None = None,
) -> str:
    """An HS256 JWT as the gateway expects (issuer and audience ``chat-memory``)."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "iss": "chat-memory",
        "aud": "chat-memory",
        "sub": user,
        "tenant": tenant,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + ttl_secs,
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    key = (secret or _env("CHAT_MEMORY_TEST_HS256_SECRET")).encode()
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.fixture(scope="session")
def gateway() -> str:
    return _env("CHAT_MEMORY_TEST_GATEWAY")


@pytest.fixture(scope="session")
def tls_gateway() -> str:
    return _env("CHAT_MEMORY_TEST_TLS_GATEWAY")


@pytest.fixture(scope="session")
def ca_cert() -> str:
    return _env("CHAT_MEMORY_TEST_CA_CERT")


@pytest.fixture(scope="session")
def rate_limit_per_minute() -> int:
    return int(_env("CHAT_MEMORY_TEST_RATE_LIMIT_PER_MINUTE"))


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def token(user: str) -> str:
    return sign_token(TENANT, user)


@pytest.fixture
def client(gateway: str, token: str) -> Iterator[MemoryClient]:
    with MemoryClient(gateway, token, timeout=15.0) as c:
        yield c


@pytest.fixture
def make_client(gateway: str) -> Iterator[Callable[..., MemoryClient]]:
    """Clients with other tokens (or none); closed at the end of the test."""
    made = []

    def make(token: str | None, **kwargs: object) -> MemoryClient:
        # "" rather than None: None would fall back to CHAT_MEMORY_TOKEN.
        c = MemoryClient(gateway, token if token is not None else "", **kwargs)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def chat_id() -> str:
    return f"py-{uuid.uuid4().hex[:16]}"
