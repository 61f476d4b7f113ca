"""With ``DATABASE_URL`` the keys live in PostgreSQL (the log's database): the CLI creates
one there, the gateway on that database requires and accepts it, and revokes it."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg

from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.settings import Settings
from tests.api.conftest import serve_app
from tests.auth.conftest import bearer, cli, error_of, private_home
from tests.conftest import free_port


def test_keys_in_postgresql_guard_a_gateway_on_that_database(
    demo_home: Home, tmp_path: Path, pg_url: str
) -> None:
    home = private_home(demo_home, tmp_path / "home").root
    out = cli("keys", "create", "--role", "admin", "--name", "pg-admin", "--home", str(home),
              env={"DATABASE_URL": pg_url})
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert not (home / "auth").exists()  # not in the home
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT id, key_hash FROM api_keys").fetchall()
    assert len(rows) == 1 and rows[0][1].startswith("sha256:") and token not in str(rows)

    settings = Settings(home=home, port=free_port(), database_url=pg_url)
    served = serve_app(create_app(settings), settings.host, settings.port)
    try:
        models = f"{served.url}/v1/models"
        assert httpx.get(models, timeout=30).status_code == 401  # a key exists: required
        assert httpx.get(models, headers=bearer(token), timeout=30).status_code == 200
        listed = httpx.get(f"{served.url}/admin/keys", headers=bearer(token), timeout=30)
        assert [k["name"] for k in listed.json()["keys"]] == ["pg-admin"]
        key_id = rows[0][0]
        r = httpx.post(f"{served.url}/admin/keys/{key_id}/revoke", headers=bearer(token),
                       timeout=30)
        assert r.status_code == 200 and r.json()["revoked_by"] == "key:pg-admin"
        refused = httpx.get(models, headers=bearer(token), timeout=30)
        assert refused.status_code == 401 and "revoked" in str(error_of(refused)["message"])
        # the only key is revoked: keys are still required (nothing reopens)
        assert httpx.get(models, timeout=30).status_code == 401
        assert httpx.get(f"{served.url}/admin/routes", timeout=30).status_code == 401
    finally:
        served.stop()
