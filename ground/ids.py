"""Names of adapters, routes and cards: plain names, never paths.

An adapter id is ``name@version`` (``support-triage@v1``); it maps to the directory
``adapters/<name>/<version>`` under the home, and nothing a client sends can escape it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from lora_router.ground.errors import InvalidId

# match with ``fullmatch``: ``^...$`` would accept a trailing newline ("a@v1\n")
_NAME = r"[a-z0-9][a-z0-9._-]{0,63}"
_VERSION = r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}"
NAME_RE = re.compile(_NAME)
ADAPTER_ID_RE = re.compile(rf"(?P<name>{_NAME})@(?P<version>{_VERSION})")
CARD_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


class AdapterId(NamedTuple):
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def parse_adapter_id(value: str) -> AdapterId:
    """Split ``name@version``; raise :class:`InvalidId` for anything else (``..``, ``/``)."""
    m = ADAPTER_ID_RE.fullmatch(value)
    if m is None or ".." in value:
        raise InvalidId(
            f"invalid adapter id {value!r}: expected name@version "
            "(lowercase name, letters/digits/._- only)",
            value=value,
        )
    return AdapterId(m["name"], m["version"])


def is_adapter_id(value: str) -> bool:
    return ADAPTER_ID_RE.fullmatch(value) is not None and ".." not in value


def check_name(value: str, kind: str = "route") -> str:
    """Validate a route (or other plain) name; return it unchanged."""
    if NAME_RE.fullmatch(value) is None or ".." in value:
        raise InvalidId(
            f"invalid {kind} name {value!r}: lowercase letters, digits and ._- only",
            value=value,
        )
    return value


def check_card_id(value: str, kind: str = "card") -> str:
    if CARD_ID_RE.fullmatch(value) is None or ".." in value:
        raise InvalidId(f"invalid {kind} id {value!r}", value=value)
    return value
