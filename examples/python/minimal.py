"""The minimal round trip: hand a chat's messages over, then read the memory back.

    pip install ./clients/python
    export CHAT_MEMORY_TOKEN=$(cat .local/token)     # with scripts/run-local.sh running
    python examples/python/minimal.py

CHAT_MEMORY_GATEWAY (default http://127.0.0.1:50051) and CHAT_MEMORY_CA_CERT (for an
https:// gateway) are read from the environment too. Exits non-zero on failure.
"""

import sys
import uuid

from chat_memory import ChatMemoryError, MemoryClient


def main() -> int:
    chat_id = f"minimal-{uuid.uuid4().hex[:8]}"
    with MemoryClient() as memory:
        job = memory.update(
            chat_id,
            [
                ("user", "Hi, I'm on the Aetna Choice POS II plan and my member ID is W123456789."),
                ("assistant", "Thanks. It sounds like you may have already met your deductible this year."),
            ],
        )
        # Read-your-writes: the gateway answers once this job is in the memory.
        m = memory.get(chat_id, after_job_id=job.job_id, wait=10)
        print(f"chat {chat_id} version {m.version} ({m.condition.name if m.condition else '-'})")
        print("user_confirmed: ", m.user_confirmed)
        print("llm_inferred:   ", m.llm_inferred)
        print("general_summary:", m.general_summary)
        if m.version < 1 or "W123456789" not in m.user_confirmed:
            print("the update is not in the memory", file=sys.stderr)
            return 1
        memory.delete(chat_id)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ChatMemoryError as e:
        print(f"chat-memory: {e}", file=sys.stderr)
        sys.exit(1)
