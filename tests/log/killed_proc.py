"""A process that records ``N`` records, says so, and waits to be killed.

``python -m tests.log.killed_proc HOME N``: every ``record()`` has returned (as a response
would have been sent) when it prints ``recorded N``; nothing has been written to the
database yet (the batch and flush interval are far beyond the test), so a SIGKILL then
leaves every record only where ``record()`` put it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from lora_router.router.log.factory import build_log_writer
from lora_router.router.settings import Settings
from tests.log.conftest import make_record


async def main(home: Path, n: int) -> None:
    settings = Settings(home=home, log_batch_size=10**6, log_flush_ms=3_600_000)
    writer = build_log_writer(settings, home)
    await writer.start()
    for i in range(n):
        writer.record(make_record(f"k{i}"))
    print(f"recorded {n}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
