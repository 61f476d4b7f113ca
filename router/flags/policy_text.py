"""A route's policy text: the system prompt kept with the route's state, not in the weights.

Fast-changing policy (a refund rule, a compliance boundary) does not belong in a fine-tune:
the weights cannot keep up and nobody notices they are out of date. So a route carries its
policy as text in :class:`~router.flags.state.RouteState` (``policy``), changed like a flip
(compare-and-set, audited, propagated to every replica) and applied to every request the
route serves, whichever arm serves it:

- completions: the engine sees the policy text (trailing whitespace removed), one blank
  line, then the client's prompt: ``f"{text.rstrip()}\\n\\n{prompt}"``;
- chat: a system message holding the policy text comes first. When the client's first
  message is a system message too, the two become one system message, the policy's text,
  a blank line, then the client's text (the policy leads and templates that accept a
  single leading system message still render); any later system message is left as sent.

Each set gets the route's next policy version (``support-triage/policy@3``; numbers are
never reused, a clear keeps the count) and the sha256 of its UTF-8 text. That label goes
in every inference-log row the route serves (``policy_version``, shadow copies included)
and in the ``x-policy-version`` response header.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from lora_router.ground.errors import InvalidRequest, LimitExceeded

# the default of the size limit (characters); RouteService(max_policy_chars=...) overrides
DEFAULT_MAX_POLICY_CHARS = 20_000
SEPARATOR = "\n\n"


class PolicyText(BaseModel):
    """The policy in force on a route: its version (per route), sha256 and text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    text: str = Field(min_length=1)


def text_sha256(text: str) -> str:
    """What ``sha256sum`` prints for a UTF-8 file holding exactly ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


def policy_label(route: str, version: int) -> str:
    """``support-triage/policy@3``: the log's ``policy_version``."""
    return f"{route}/policy@{version}"


def new_policy(text: str, version: int, max_chars: int) -> PolicyText:
    """Policy ``version`` holding ``text``: ``LimitExceeded`` (413) over ``max_chars``,
    ``InvalidRequest`` when it is blank."""
    if len(text) > max_chars:
        raise LimitExceeded(
            f"policy text is {len(text):,} characters, over the limit of {max_chars:,} "
            f"characters (max_policy_chars)",
            param="text", limit="max_policy_chars",
        )
    if not text.strip():
        raise InvalidRequest("policy text is empty", param="text")
    return PolicyText(version=version, sha256=text_sha256(text), text=text)


def prefixed_prompt(policy: PolicyText, prompt: str) -> str:
    """The completion prompt the engine sees (module docstring)."""
    return f"{policy.text.rstrip()}{SEPARATOR}{prompt}"


def with_system_message(
    policy: PolicyText, messages: Sequence[dict[str, str]]
) -> list[dict[str, str]]:
    """The chat messages the engine's template renders (module docstring)."""
    text = policy.text.rstrip()
    if messages and messages[0].get("role") == "system":
        first = {"role": "system", "content": f"{text}{SEPARATOR}{messages[0]['content']}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]
