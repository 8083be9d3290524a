"""Deletes the JetStream streams of one test stack (scripts/python-tests.sh's clean-up).

Speaks the NATS text protocol over a socket (JetStream's API is request/reply on
``$JS.API.*`` subjects), so the clean-up needs no NATS client library or CLI.

    python nats_admin.py delete-streams NATS_HOST:PORT NAME_FRAGMENT

deletes every stream whose name contains NAME_FRAGMENT (the jobs stream, its
dead letters and audit outbox, the rate-limit bucket's KV_ stream).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import List, Optional


class Nats:
    def __init__(self, address: str, timeout: float = 5.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""
        self.sid = 0
        self._line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("NATS closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("NATS closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def request(self, subject: str, payload: bytes = b"", timeout: float = 5.0) -> bytes:
        self.sid += 1
        inbox = f"_INBOX.pytests.{self.sid}"
        self.sock.sendall(
            f"SUB {inbox} {self.sid}\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode()
            + payload
            + b"\r\n"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                parts = line.split()
                data = self._exact(int(parts[-1]))
                if parts[1].decode() == inbox:
                    self.sock.sendall(f"UNSUB {self.sid}\r\n".encode())
                    return data
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())
        raise TimeoutError(f"no answer to {subject}")


def stream_names(nats: Nats) -> List[str]:
    names: List[str] = []
    offset = 0
    while True:
        resp = json.loads(nats.request("$JS.API.STREAM.NAMES", json.dumps({"offset": offset}).encode()))
        page: Optional[List[str]] = resp.get("streams")
        if not page:
            return names
        names.extend(page)
        offset += len(page)
        if offset >= resp.get("total", 0):
            return names


def delete_streams(address: str, fragment: str) -> int:
    if len(fragment) < 6:
        raise SystemExit("refusing a name fragment shorter than 6 characters")
    nats = Nats(address)
    deleted = 0
    for name in stream_names(nats):
        if fragment in name:
            resp = json.loads(nats.request(f"$JS.API.STREAM.DELETE.{name}"))
            if resp.get("success"):
                deleted += 1
            else:
                print(f"could not delete stream {name}: {resp}", file=sys.stderr)
    return deleted


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "delete-streams":
        raise SystemExit(__doc__)
    n = delete_streams(sys.argv[2], sys.argv[3])
    print(f"deleted {n} stream(s) containing {sys.argv[3]}", file=sys.stderr)
