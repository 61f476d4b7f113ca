"""The roles a key can have, ordered: ``app`` < ``oncall`` < ``admin``."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a key may do; each role allows everything the roles below it allow."""

    APP = "app"  # /v1: completions, chat, models, feedback
    ONCALL = "oncall"  # also the route operations and their audit (/admin/routes*)
    ADMIN = "admin"  # also key management (/admin/keys*)

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """Whether a key with this role may call an endpoint that needs ``needed``."""
        return self.rank >= needed.rank


_RANK = {Role.APP: 0, Role.ONCALL: 1, Role.ADMIN: 2}
