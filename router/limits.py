"""Request size limits, from :class:`~router.settings.Settings`, checked before any work.

A request larger than a limit is refused with :class:`~ground.errors.LimitExceeded` (413)
whose message names the limit, its value and the setting that changes it: body and header
sizes at the ASGI boundary (:mod:`router.api.middleware`), prompt characters before the
prompt is rendered or tokenised (:mod:`router.completions`), admin ``reason``/``actor`` before a
change is made (:mod:`router.api.admin`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lora_router.ground.errors import LimitExceeded
from lora_router.router.settings import Settings


def setting_name(field: str) -> str:
    """The environment variable of a Settings field."""
    return f"LORA_ROUTER_{field.upper()}"


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force (defaults: the Settings defaults)."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_prompt_chars: int = 200_000
    max_user_chars: int = 256
    max_reason_chars: int = 1000
    max_actor_chars: int = 128

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=settings.max_header_bytes,
            max_prompt_chars=settings.max_prompt_chars,
            max_user_chars=settings.max_user_chars,
            max_reason_chars=settings.max_reason_chars,
            max_actor_chars=settings.max_actor_chars,
        )

    def check(self, field: str, what: str, size: int, *, param: str | None = None,
              unit: str = "characters") -> None:
        """Raise ``LimitExceeded`` when ``size`` is over the limit named by ``field``."""
        limit: int = getattr(self, field)
        if size > limit:
            raise LimitExceeded(
                f"{what} is {size:,} {unit}, over the limit of {limit:,} {unit} "
                f"({field}, env {setting_name(field)})",
                param=param,
                limit=field,
            )

    def check_text(self, field: str, what: str, value: str | None, *,
                   param: str | None = None) -> None:
        if value is not None:
            self.check(field, what, len(value), param=param)
