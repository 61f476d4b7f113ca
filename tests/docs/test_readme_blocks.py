"""The README's shell and Python blocks, run as written, in one terminal session.

Every ```bash / ```python block in README.md carries a marker on the line before it:
``<!-- readme-test: run -->`` (run here, in README order, as if typed into one terminal
after ``make run``) or ``<!-- readme-test: skip REASON -->``. A new block without a marker
fails :func:`test_every_block_is_marked`, so the README cannot grow an untested example.

What differs from a reader's terminal, and only this: a private copy of the demo home
(``LORA_ROUTER_HOME``), a free port for ``127.0.0.1:8000`` / ``gateway:8000``, the tests'
Redis database for ``redis://127.0.0.1:6379/0``, and the README's placeholders filled from
what the earlier commands printed (``lr_...``: the key ``keys create`` printed; ``KEY_ID``:
its id). Comment lines starting ``#  `` under a command are its expected output: numbers and
``...`` may differ, the words may not.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from lora_router.ground.home import Home
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = re.compile(r"<!--\s*readme-test:\s*(run|skip)\b\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(bash|python)\s*$")
READY_S = 180.0
# a number standing alone (not the 1 of ``@v1``), or ``...``
NUMBER_OR_ELLIPSIS = re.compile(r"(\.\.\.|(?<![\w@.])\d+(?:\.\d+)?(?!\w))")


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    text: str
    mark: str | None  # "run" / "skip" / None
    reason: str = ""


def readme_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = next((lines[k] for k in range(i - 1, max(i - 3, -1), -1) if lines[k].strip()),
                     "")
        mark = MARK.search(above)
        blocks.append(Block(fence.group(1), i + 1, "\n".join(lines[i + 1:end]),
                            mark.group(1) if mark else None, mark.group(2) if mark else ""))
        i = end + 1
    return blocks


def test_every_block_is_marked() -> None:
    blocks = readme_blocks()
    assert blocks, "README.md has no code blocks?"
    unmarked = [f"README.md:{b.line} ({b.lang})" for b in blocks if b.mark is None]
    assert unmarked == [], "mark each block <!-- readme-test: run --> or skip with a reason"
    assert all(b.reason for b in blocks if b.mark == "skip"), "a skip says why"


@dataclass
class Session:
    """One reader's terminal: environment, placeholders learned from earlier output."""

    env: dict[str, str]
    workdir: Path  # the reader's current directory for the shell blocks (files they write)
    port: int
    redis_url: str
    values: dict[str, str] = field(default_factory=dict)
    transcript: list[str] = field(default_factory=list)

    def localise(self, text: str) -> str:
        text = text.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        text = text.replace("http://gateway:8000", f"http://127.0.0.1:{self.port}")
        text = text.replace("redis://127.0.0.1:6379/0", self.redis_url)
        for placeholder, value in self.values.items():
            text = text.replace(placeholder, value)
        return text

    def learn(self, output: str) -> None:
        key = re.search(r"\blr_[A-Za-z0-9_]+\b", output)
        if key:
            self.values["lr_..."] = key.group(0)
        key_id = re.search(r"created key (\w+)", output)
        if key_id:
            self.values["KEY_ID"] = key_id.group(1)


def shell_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) per command of a shell block."""
    out: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        if raw.startswith("#  ") and out:
            out[-1][1].append(raw[3:].strip())
        elif raw.strip() and not raw.lstrip().startswith("#"):
            out.append((raw, []))
    return out


def expected_pattern(line: str) -> re.Pattern[str]:
    """Numbers and ``...`` stand for whatever this run prints there; words must match."""
    def word(w: str) -> str:
        if w == "...":
            return ".*"
        return "".join(
            ".*" if p == "..." else r"\d+(?:\.\d+)?" if p and p[0].isdigit() else re.escape(p)
            for p in NUMBER_OR_ELLIPSIS.split(w)
        )
    return re.compile(r"\s+".join(word(w) for w in line.split()))


def run_shell(session: Session, block: Block) -> None:
    for command, expected in shell_commands(block.text):
        line = session.localise(command)
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            name, _, value = words[1].partition("=")
            session.env[name] = value
            continue
        run = subprocess.run(line, shell=True, executable="/bin/bash", cwd=session.workdir,
                             env=session.env, capture_output=True, text=True, timeout=300)
        output = run.stdout + run.stderr
        session.transcript.append(f"$ {line}\n{output}")
        assert run.returncode == 0, f"README.md:{block.line}: {command!r} exited " \
            f"{run.returncode}:\n{output}"
        session.learn(output)
        flat = " ".join(output.split())
        for want in expected:
            assert expected_pattern(want).search(flat), \
                f"README.md:{block.line}: {command!r} should print {want!r}; it printed:\n{output}"


def run_python(session: Session, block: Block) -> None:
    """Run the block; each ``print(...)  # ...`` line's comment names what it prints."""
    run = subprocess.run([sys.executable, "-c", session.localise(block.text)], cwd=ROOT,
                         env=session.env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"README.md:{block.line}:\n{run.stdout}{run.stderr}"
    printed = run.stdout.splitlines()
    comments = [ln.split("#", 1)[1] for ln in block.text.splitlines()
                if ln.lstrip().startswith("print(") and "#" in ln]
    assert len(printed) == len(comments), run.stdout
    for got, comment in zip(printed, comments, strict=True):
        assert got.strip() and (f'"{got}"' in comment or f" {got.strip()} " in f"{comment} "), \
            f"README.md:{block.line}: printed {got!r}, the README says {comment.strip()!r}"


@pytest.fixture
def gateway(copy_home: Home, redis_url: str) -> Iterator[Session]:
    """``make run`` as the README has it (embedded defaults), on a copy of the demo home and
    a free port."""
    venv_bin = ROOT / ".venv" / "bin"
    if not (venv_bin / "lora-router").exists():
        pytest.fail("run `make install` (or `make test`) first: the README's `make run` "
                    "uses .venv", pytrace=False)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_ROUTER_")}
    env.update(LORA_ROUTER_HOME=str(copy_home.root), HF_HUB_OFFLINE="1",
               PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}")
    serve_env = dict(env, PORT=str(port))  # embedded defaults, as the set-up has it
    proc = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=serve_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_ready(proc, port)
        workdir = copy_home.root.parent / "terminal"
        workdir.mkdir()
        yield Session(env=env, workdir=workdir, port=port, redis_url=redis_url)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the `make run` terminal
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
        # the gateway shuts down cleanly; make, like any foreground job, ends by the
        # signal itself, printing no error of its own
        assert "Application shutdown complete" in out and "make: ***" not in out, out[-2000:]
        assert proc.returncode in (0, -signal.SIGINT), out[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"make run exited {proc.returncode}: "
                                 f"{proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"make run not ready on :{port} within {READY_S} s")


def test_readme_blocks_run_as_written(gateway: Session) -> None:
    ran = 0
    for block in readme_blocks():
        if block.mark != "run":
            continue
        if block.lang == "python":
            run_python(gateway, block)
        else:
            run_shell(gateway, block)
        ran += 1
    assert ran >= 3, "the README's usage blocks are marked run"


def test_expected_output_patterns() -> None:
    """The output matcher is strict on words and loose on numbers and ``...`` only."""
    pat = expected_pattern("committed in 3.10 ms")
    assert pat.search("x committed in 12.5 ms y")
    assert not pat.search("committed at 12.5 ms")
    pat = expected_pattern("rollback support-triage: version 7  live=support-triage@v1 ...")
    assert pat.search("rollback support-triage: version 12 live=support-triage@v1 canary=-")
    assert not pat.search("rollback support-triage: version 12 live=support-triage@v2")
