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
import signal
import socket
import subprocess
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


class GatewayProcess:
    """A gateway of the test's own on the stack's queue and store, to stop and start."""

    def __init__(self) -> None:
        self.binary = _env("CHAT_MEMORY_TEST_GATEWAY_BIN")
        with open(_env("CHAT_MEMORY_TEST_GATEWAY_ENV"), encoding="utf-8") as f:
            settings = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        port, metrics_port = _env("CHAT_MEMORY_TEST_SPARE_PORTS").split()
        self.address = f"http://127.0.0.1:{port}"
        self.port = int(port)
        self.env = {
            **os.environ,
            **settings,
            "CHAT_MEMORY__LISTEN_ADDR": f"127.0.0.1:{port}",
            "CHAT_MEMORY__TELEMETRY__METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "NO_COLOR": "1",
            "CHAT_MEMORY__TELEMETRY__LOG_FORMAT": "pretty",
        }
        self.process: "subprocess.Popen[bytes] | None" = None

    def start(self, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [self.binary], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.process.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)  # polling the port, bounded by the deadline
        raise TimeoutError(f"the gateway did not listen on {self.port} within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the gateway did not stop within {timeout} s of signal {sig}")


@pytest.fixture
def own_gateway() -> Iterator[GatewayProcess]:
    gw = GatewayProcess()
    gw.start()
    try:
        yield gw
    finally:
        if gw.process is not None and gw.process.poll() is None:
            gw.process.kill()
            gw.process.wait()
