"""An agent loop that uses chat-memory as its short-term memory.

Each turn: read the chat's memory before answering, answer, then hand the turn's
two messages over with the turn id as idempotency key. When an answer needs what
the previous turn said, the read waits for that turn's update (read-your-writes).

    pip install ./clients/python
    export CHAT_MEMORY_TOKEN=$(cat .local/token)     # with scripts/run-local.sh running
    python examples/python/agent_loop.py

The "model" here is a stand-in function so the example runs offline; put your LLM
call in `answer()`. Exits non-zero on failure.
"""

from __future__ import annotations

import sys
import uuid
from typing import Optional

from chat_memory import ChatMemoryError, Memory, MemoryClient, NotFound, ReadCondition

USER_TURNS = [
    "Hi, I'm on the Aetna Choice POS II plan and my member ID is W123456789.",
    "My deductible is $1,500 and I think I've paid about $1,600 this year.",
    "Can you remind me which member ID you have on file for me?",
]


def answer(user_text: str, memory: Optional[Memory]) -> str:
    """Stand-in for the LLM call: the prompt would carry the memory's three fields."""
    facts = memory.user_confirmed if memory else ""
    if "member ID" in user_text and "W123456789" in facts:
        return "You told me your member ID is W123456789."
    if "deductible" in user_text:
        return "It sounds like you may have already met your deductible this year."
    return "Thanks, noted."


def read_memory(
    client: MemoryClient, chat_id: str, after_job_id: Optional[str]
) -> Optional[Memory]:
    """The memory to answer from. With after_job_id, waits (up to 10 s) until the
    previous turn is folded in, so the answer sees it."""
    try:
        m = client.get(chat_id, after_job_id=after_job_id, wait=10 if after_job_id else None)
    except NotFound:
        return None  # a new chat: no memory yet
    if m.condition is ReadCondition.TIMED_OUT:
        print(f"  (previous turn not applied yet; answering from version {m.version})")
    return m


def main() -> int:
    chat_id = f"agent-{uuid.uuid4().hex[:8]}"
    last_job: Optional[str] = None
    answers = []
    with MemoryClient() as client:
        for n, user_text in enumerate(USER_TURNS, start=1):
            # Only the last question needs the previous turns' facts: wait for them
            # there; the other turns answer from whatever memory is there now.
            needs_latest = "remind me" in user_text
            memory = read_memory(client, chat_id, last_job if needs_latest else None)
            reply = answer(user_text, memory)
            answers.append(reply)
            print(f"turn {n}: memory v{memory.version if memory else 0}")
            print(f"  user:      {user_text}")
            print(f"  assistant: {reply}")
            turn_id = f"turn-{n}"  # the caller's own id: a retried turn is applied once
            job = client.update(chat_id, [("user", user_text), ("assistant", reply)], idempotency_key=turn_id)
            last_job = job.job_id
            if n == 1:
                # A retry of the same turn (say, after a timeout) has no second effect.
                again = client.update(chat_id, [("user", user_text), ("assistant", reply)], idempotency_key=turn_id)
                assert again.deduplicated and again.job_id == job.job_id

        status = client.wait_for(last_job, timeout=30)
        final = client.get(chat_id)
        print(f"final memory v{final.version} ({status.state.value})")
        print("  user_confirmed:", final.user_confirmed.replace("\n", " | "))
        print("  llm_inferred:  ", final.llm_inferred.replace("\n", " | "))
        client.delete(chat_id)

    if "W123456789" not in answers[-1]:
        print("the last answer did not see the first turn's member ID", file=sys.stderr)
        return 1
    if not status.succeeded or final.version < 1:
        print(f"the last update did not apply: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ChatMemoryError as e:
        print(f"chat-memory: {e}", file=sys.stderr)
        sys.exit(1)
