"""The MCP endpoint (chat-memory-mcp) through the Python ``mcp`` SDK, an MCP
client written independently of the server: tools listed, messages added and
read back, no token refused, tenants kept apart.

Environment (scripts/python-tests.sh sets it):
  CHAT_MEMORY_MCP_URL          the endpoint, e.g. http://127.0.0.1:21057/mcp
  CHAT_MEMORY_MCP_TOKEN        a gateway token (memory:read, memory:write) of one tenant
  CHAT_MEMORY_MCP_OTHER_TOKEN  a gateway token of another tenant
The front forwards these tokens to the gateway, which authenticates, limits,
isolates and audits each call: nothing here knows the gateway's key.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, TypeVar

import pytest

mcp = pytest.importorskip("mcp", reason="the mcp SDK needs Python >= 3.10")
httpx2 = pytest.importorskip("httpx2")

from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

T = TypeVar("T")

PLAN = "Hi, I'm on the Aetna Choice POS II plan and my member ID is W123456789."
GUESS = "It sounds like you may have already met your deductible this year."


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with scripts/python-tests.sh")
    return value


@pytest.fixture(scope="module")
def url() -> str:
    return _env("CHAT_MEMORY_MCP_URL")


@pytest.fixture(scope="module")
def token() -> str:
    return _env("CHAT_MEMORY_MCP_TOKEN")


@pytest.fixture(scope="module")
def other_token() -> str:
    return _env("CHAT_MEMORY_MCP_OTHER_TOKEN")


@pytest.fixture
def chat_id() -> str:
    return f"mcp-{uuid.uuid4().hex[:16]}"


def run(session: Callable[[Client], Awaitable[T]], url: str, token: Optional[str], mode: str = "auto") -> T:
    """Opens an MCP session as the SDK does (``mode`` "auto" negotiates the
    newest protocol, "legacy" uses the initialize handshake) and runs ``session``."""

    async def main() -> T:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30.0) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                return await session(client)

    return asyncio.run(main())


def structured(result: Any) -> Dict[str, Any]:
    assert not result.is_error, f"tool error: {result.structured_content or result.content}"
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def tool_error(result: Any) -> Dict[str, Any]:
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def leaves(error: BaseException) -> List[BaseException]:
    """The exceptions inside (nested) exception groups, which anyio raises."""
    inner = getattr(error, "exceptions", None)
    if not inner:
        return [error]
    return [leaf for e in inner for leaf in leaves(e)]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_three_tools_are_listed_saying_when_to_call_them(url: str, token: str, mode: str) -> None:
    async def session(client: Client) -> Any:
        return await client.list_tools()

    tools = {t.name: t for t in run(session, url, token, mode).tools}

    assert sorted(tools) == ["add_messages", "read_memory", "update_status"]
    assert "before answering" in (tools["read_memory"].description or "")
    assert "after each turn" in (tools["add_messages"].description or "")
    assert "idempotency_key" in (tools["add_messages"].description or "")
    for name, fields in {
        "read_memory": ["chat_id", "min_version", "after_job_id", "wait_ms"],
        "add_messages": ["chat_id", "messages", "idempotency_key"],
        "update_status": ["job_id"],
    }.items():
        properties = tools[name].input_schema["properties"]
        for field in fields:
            assert properties[field].get("description"), f"{name}.{field} is undescribed"
        assert tools[name].output_schema, f"{name} has no output schema"
    memory_fields = tools["read_memory"].output_schema["properties"]
    for field in ["user_confirmed", "llm_inferred", "general_summary", "version", "freshness"]:
        assert field in memory_fields


def test_messages_added_are_read_back_once_their_update_is_applied(url: str, token: str, chat_id: str) -> None:
    turn_id = f"turn-{uuid.uuid4().hex[:8]}"
    messages = [{"role": "user", "content": PLAN}, {"role": "assistant", "content": GUESS}]

    async def session(client: Client) -> Dict[str, Any]:
        added = structured(
            await client.call_tool(
                "add_messages", {"chat_id": chat_id, "messages": messages, "idempotency_key": turn_id}
            )
        )
        memory = structured(
            await client.call_tool(
                "read_memory", {"chat_id": chat_id, "after_job_id": added["job_id"], "wait_ms": 10000}
            )
        )
        retried = structured(
            await client.call_tool(
                "add_messages", {"chat_id": chat_id, "messages": messages, "idempotency_key": turn_id}
            )
        )
        status = structured(await client.call_tool("update_status", {"job_id": added["job_id"]}))
        return {"added": added, "memory": memory, "retried": retried, "status": status}

    out = run(session, url, token)

    added, memory, retried, status = out["added"], out["memory"], out["retried"], out["status"]
    assert added["deduplicated"] is False
    assert memory["condition"] == "met"
    assert memory["chat_id"] == chat_id
    assert memory["version"] == 1
    assert memory["freshness"]["last_applied_job_id"] == added["job_id"]
    assert "W123456789" in memory["user_confirmed"]
    assert "deductible" in memory["llm_inferred"]
    assert "deductible" not in memory["user_confirmed"]  # the assistant's guess is no fact
    assert retried == {"job_id": added["job_id"], "deduplicated": True}
    assert status["state"] == "succeeded"
    assert status["resulting_version"] == 1


def test_without_a_token_the_endpoint_answers_401_and_no_session_opens(url: str) -> None:
    async def raw_post() -> Any:
        async with httpx2.AsyncClient(timeout=10.0) as http:
            return await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"Accept": "application/json, text/event-stream"},
            )

    response = asyncio.run(raw_post())

    assert response.status_code == 401
    assert response.headers.get("www-authenticate", "").startswith("Bearer")

    async def session(client: Client) -> Any:
        return await client.list_tools()

    with pytest.raises(BaseException) as refused:
        run(session, url, token=None)
    assert any(isinstance(e, mcp.MCPError) for e in leaves(refused.value)), repr(refused.value)


def test_another_tenant_can_neither_read_the_chat_nor_see_its_update(
    url: str, token: str, other_token: str, chat_id: str
) -> None:
    async def owner(client: Client) -> str:
        added = structured(
            await client.call_tool(
                "add_messages",
                {"chat_id": chat_id, "messages": [{"role": "user", "content": "My plan is Blue Shield PPO."}]},
            )
        )
        structured(
            await client.call_tool(
                "read_memory", {"chat_id": chat_id, "after_job_id": added["job_id"], "wait_ms": 10000}
            )
        )
        return str(added["job_id"])

    job_id = run(owner, url, token)

    async def other(client: Client) -> List[Dict[str, Any]]:
        read = tool_error(await client.call_tool("read_memory", {"chat_id": chat_id}))
        status = tool_error(await client.call_tool("update_status", {"job_id": job_id}))
        return [read, status]

    read, status = run(other, url, other_token)

    assert read["code"] == "NOT_FOUND"
    assert status["code"] == "NOT_FOUND"
    assert "Blue Shield" not in str(read)

    async def owner_again(client: Client) -> Dict[str, Any]:
        return structured(await client.call_tool("read_memory", {"chat_id": chat_id}))

    assert run(owner_again, url, token)["version"] == 1


@pytest.mark.parametrize(
    "tool, arguments, field",
    [
        ("add_messages", {"chat_id": "a/b", "messages": [{"role": "user", "content": "hi"}]}, "chat_id"),
        ("add_messages", {"chat_id": "c1", "messages": []}, "messages"),
        ("add_messages", {"chat_id": "c1", "messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role"),
        ("read_memory", {"chat_id": "c1", "wait_ms": 60000}, "wait_ms"),
        ("update_status", {"job_id": "not-a-job-id"}, "job_id"),
    ],
)
def test_a_bad_argument_is_an_invalid_argument_tool_error_naming_the_field(
    url: str, token: str, tool: str, arguments: Dict[str, Any], field: str
) -> None:
    async def session(client: Client) -> Dict[str, Any]:
        return tool_error(await client.call_tool(tool, arguments))

    error = run(session, url, token)

    assert error["code"] == "INVALID_ARGUMENT"
    assert error["field_violations"][0]["field"] == field
    assert error["message"]
