"""The journal: a record is on local disk when ``record()`` returns; its raw prompt leaves the
disk once the record is written; a dead process's journal is replayed (and scrubbed of a
deleted subject before that)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from lora_router.router.cli.main import app
from lora_router.router.log.factory import build_log_writer
from lora_router.router.log.journal import Journal, encode, header
from lora_router.router.log.sqlite_sink import SqliteSink
from lora_router.router.settings import Settings
from tests.log.conftest import make_record, make_writer

SECRET = "my card 4111 is blocked, I am CUST-777"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _journal_text(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (home / "log" / "journal").glob("j-*.jsonl"))


def test_sigkill_after_record_returned_loses_no_record(tmp_path: Path) -> None:
    n = 500
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with subprocess.Popen([sys.executable, "-m", "tests.log.killed_proc", str(tmp_path), str(n)],
                          stdout=subprocess.PIPE, env=env) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == f"recorded {n}".encode()
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()

    async def restart() -> set[str]:
        writer = build_log_writer(Settings(home=tmp_path), tmp_path)
        await writer.start()
        await writer.flush()
        await writer.close()
        sink = SqliteSink(tmp_path / "log" / "inference.db")
        await sink.open()
        ids = {r["request_id"] for r in await sink.tail(10 * n)}
        await sink.close()
        return ids

    assert asyncio.run(restart()) == {f"k{i}" for i in range(n)}
    assert _journal_text(tmp_path) == b""  # replayed, then deleted


async def test_raw_prompts_leave_the_disk_once_their_records_are_written(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "log" / "inference.db")
    journal = Journal(tmp_path / "log" / "journal", rotate_s=0.05, fsync_interval_s=0.05)
    writer = make_writer(sink, tmp_path, journal=journal)
    for i in range(10):
        writer.record(make_record(f"p{i}", prompt=SECRET))
    assert _journal_text(tmp_path).count(b"4111") == 10  # on disk before anything else
    [segment] = list(journal.dir.glob("j-*.jsonl"))
    assert _mode(segment) == 0o600 and _mode(journal.dir) == 0o700
    await writer.start()
    try:
        await writer.flush()
        deadline = time.monotonic() + 10
        while _journal_text(tmp_path):  # rotated after rotate_s, deleted once written
            assert time.monotonic() < deadline, "journal segment never deleted"
            await asyncio.sleep(0.02)
            await writer.flush()
        status = writer.status()
    finally:
        await writer.close()
    assert status["journal"] == {**status["journal"], "ok": True, "unjournaled": 0,
                                 "fsync_interval_s": 0.05}
    assert status["degraded"] is False and status["problems"] == []
    assert len(await sink.tail(100)) == 10
    await sink.close()


def test_the_fsync_interval_is_a_setting(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, log_fsync_interval_s=0.25)
    writer = build_log_writer(settings, tmp_path)
    assert writer.journal.fsync_interval_s == 0.25


def test_delete_subject_scrubs_a_dead_processes_journal_before_its_replay(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    journal_dir = home / "log" / "journal"
    journal_dir.mkdir(parents=True, mode=0o700)
    recs = [make_record(f"d{i}", subject="CUST-777", prompt=SECRET, route_key="CUST-777")
            for i in range(3)]
    recs.append(make_record("e0", subject="CUST-888"))
    (journal_dir / "j-1-999999.jsonl").write_bytes(
        header() + b"".join(encode(r) for r in recs))
    env = {"LORA_ROUTER_INPUT_STORE_ENABLED": "1", "COLUMNS": "200"}

    def cli(*args: str) -> str:
        result = CliRunner().invoke(app, [*args, "--home", str(home)], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    out = cli("log", "delete-subject", "CUST-777")
    assert "and 3 not yet written" in out
    assert b"4111" not in _journal_text(home) and b"CUST-777" not in _journal_text(home)
    cli("log", "replay")

    async def check() -> None:
        sink = SqliteSink(home / "log" / "inference.db")
        await sink.open()
        try:
            rows = {r["request_id"]: r for r in await sink.tail(100)}
            assert set(rows) == {"d0", "d1", "d2", "e0"}
            feats = rows["d0"]["input_features"]
            assert feats["entities"]["customer_id"] == 1 and feats["chars"] == len(SECRET)
            assert rows["d0"]["input_hash"] == recs[0].input_hash
            assert rows["d0"]["route_key_hash"] is not None
            assert [i["request_id"] for i in await sink.inputs()] == ["e0"]
        finally:
            await sink.close()

    asyncio.run(check())
    assert _journal_text(home) == b""
