"""The demo task's contract: eight triage labels, the prompt, and the completion format.

A prompt is ``Ticket: <text>\\nCategory:``; the adapter completes it with one space, the
label, and the end-of-sequence token (`` billing</s>``). :func:`parse_label` reads the
first generated word back into a label (or ``None``).
"""

from __future__ import annotations

import re

LABELS: tuple[str, ...] = (
    "billing",
    "shipping",
    "returns",
    "account",
    "technical",
    "refund",
    "cancellation",
    "product_question",
)
LANGUAGES: tuple[str, ...] = ("en", "es")

PROMPT_TEMPLATE = "Ticket: {text}\nCategory:"
COMPLETION_TEMPLATE = " {label}"  # followed by the tokenizer's EOS token

_WORD = re.compile(r"[A-Za-z_]+")


def format_prompt(ticket_text: str, template: str = PROMPT_TEMPLATE) -> str:
    """The prompt the triage adapters were trained on, for one ticket."""
    return template.format(text=" ".join(ticket_text.split()))


def format_completion(label: str) -> str:
    """The completion text (without EOS) an adapter is trained to produce."""
    return COMPLETION_TEMPLATE.format(label=label)


def parse_label(generated: str) -> str | None:
    """The first generated word if it is one of :data:`LABELS`, else ``None``."""
    m = _WORD.search(generated)
    if m is None:
        return None
    word = m.group(0).lower()
    return word if word in LABELS else None
