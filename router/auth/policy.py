"""Whether ``/v1`` needs an ``app`` key: the operator's explicit choice, else the home's.

``LORA_ROUTER_REQUIRE_APP_KEY`` (true/false) decides when set; else ``<home>/access.yaml``'s
``require_app_key`` (the demo build writes ``false``, so the quickstart needs no key);
else ``None``: ``/v1`` needs an app key once any key exists, revoked ones included (with no
key at all there is nothing to present, and ``serve`` refuses a non-loopback address
without one; revoking every key does not reopen ``/v1``).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lora_router.ground.errors import ConfigError
from lora_router.router.settings import Settings

ACCESS_FILE = "access.yaml"

_HEADER = """\
# Access to this gateway (read by `lora-router serve` at start; LORA_ROUTER_REQUIRE_APP_KEY
# overrides it). require_app_key: true = /v1 needs an app key (lora-router keys create
# --role app --name NAME); false = /v1 needs none; absent = needed once any key exists.
# The admin API needs an oncall or admin key once any key exists, whatever this says.
"""


class AccessFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_app_key: bool | None = None


def access_path(home: Path) -> Path:
    return home / ACCESS_FILE


def read_access_file(home: Path) -> AccessFile:
    path = access_path(home)
    if not path.is_file():
        return AccessFile()
    try:
        return AccessFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from exc
    except (yaml.YAMLError, OSError) as exc:
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from exc


def write_access_file(home: Path, *, require_app_key: bool) -> Path:
    path = access_path(home)
    body = yaml.safe_dump({"require_app_key": require_app_key})
    path.write_text(_HEADER + body)
    return path


def require_app_key(settings: Settings) -> bool | None:
    """True/False as configured, or None: once any key exists (see the module docstring)."""
    if settings.require_app_key is not None:
        return settings.require_app_key
    return read_access_file(settings.home).require_app_key
