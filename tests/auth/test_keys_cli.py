"""``lora-router keys create|list|revoke``: the key is printed once, listings never show
it, the store keeps only its hash; bad input is one line and exit 2."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from lora_router.ground.home import Home
from lora_router.router.auth.factory import sqlite_keys_path
from tests.auth.conftest import cli, private_home


def _files_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_create_prints_the_key_once_and_stores_only_its_hash(
    demo_home: Home, tmp_path: Path
) -> None:
    home = private_home(demo_home, tmp_path / "home").root
    created = cli("keys", "create", "--role", "oncall", "--name", "alice", "--home", str(home))
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("lr_oncall_") and len(created.stdout.splitlines()) == 1
    key_id = token.split("_")[2]
    assert key_id in created.stderr and "not shown again" in created.stderr
    assert token not in created.stderr

    as_json = cli("keys", "create", "--role", "app", "--name", "web", "--json",
                  "--home", str(home))
    assert as_json.returncode == 0, as_json.stderr
    second = json.loads(as_json.stdout)
    assert second["role"] == "app" and second["key"].startswith(f"lr_app_{second['id']}_")

    listed = cli("keys", "list", "--home", str(home))
    listed_json = cli("keys", "list", "--json", "--home", str(home))
    for out in (listed, listed_json):
        assert out.returncode == 0, out.stderr
        assert token not in out.stdout and second["key"] not in out.stdout
        assert "sha256" not in out.stdout
    rows = json.loads(listed_json.stdout)
    assert [(k["id"], k["name"], k["role"], k["active"]) for k in rows] == [
        (key_id, "alice", "oncall", True), (second["id"], "web", "app", True)]
    assert key_id in listed.stdout and "alice" in listed.stdout  # the table, whole ids

    db = sqlite_keys_path(home)
    assert (db.stat().st_mode & 0o777) == 0o600 and (db.parent.stat().st_mode & 0o777) == 0o700
    stored = _files_bytes(db.parent)
    for t in (token, second["key"]):
        assert t.encode() not in stored and t.split("_")[3].encode() not in stored
    with sqlite3.connect(db) as conn:
        hashes = dict(conn.execute("SELECT id, key_hash FROM api_keys").fetchall())
    assert hashes[key_id] == "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_revoke_marks_the_key_and_keeps_its_row(demo_home: Home, tmp_path: Path) -> None:
    home = str(private_home(demo_home, tmp_path / "home").root)
    token = cli("keys", "create", "--role", "admin", "--name", "bob", "--home", home).stdout
    key_id = token.split("_")[2]
    out = cli("keys", "revoke", key_id, "--home", home)
    assert out.returncode == 0, out.stderr
    assert f"revoked key {key_id} (key:bob" in out.stdout
    rows = json.loads(cli("keys", "list", "--json", "--home", home).stdout)
    assert rows[0]["active"] is False and rows[0]["revoked_by"].startswith("cli")
    assert "revoked" in cli("keys", "list", "--home", home).stdout


def test_bad_input_is_a_clear_error_and_exit_2(demo_home: Home, tmp_path: Path) -> None:
    home = str(private_home(demo_home, tmp_path / "home").root)
    cases = [
        (("keys", "revoke", "0123456789ab", "--home", home), "no API key"),
        (("keys", "revoke", "../etc", "--home", home), "no API key"),
        (("keys", "create", "--role", "app", "--name", "a b", "--home", home),
         "invalid key name"),
        (("keys", "list", "--home", str(tmp_path / "nowhere")), "no lora-router home"),
    ]
    for args, said in cases:
        out = cli(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert out.stderr.startswith("error: ") and said in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    usage = cli("keys", "create", "--role", "root", "--name", "x", "--home", home)
    assert usage.returncode == 2 and "'root' is not one of" in usage.stderr, usage.stderr
    assert "Traceback" not in usage.stderr
    assert not sqlite_keys_path(Path(home)).exists()  # nothing was created
