"""A process that logs records continuously until SIGTERM, then drains like the gateway.

``python -m tests.log.writer_proc HOME [DATABASE_URL]``: prints ``ready`` once started; on
SIGTERM stops producing, awaits ``close()`` and writes the number of records it produced to
``HOME/produced``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from lora_router.router.log.factory import build_log_writer
from lora_router.router.settings import Settings
from tests.log.conftest import make_record


async def main(home: Path, database_url: str | None) -> None:
    settings = Settings(home=home, database_url=database_url, log_batch_size=64, log_flush_ms=50)
    writer = build_log_writer(settings, home)
    await writer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    produced = 0
    while not stop.is_set():
        for _ in range(50):
            writer.record(make_record())
            produced += 1
        await asyncio.sleep(0.005)
    await writer.close()
    (home / "produced").write_text(str(produced))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
