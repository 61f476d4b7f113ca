"""Input features of a request, computed off the request path from its transient prompt.

What is kept is shape, never content: lengths, a detected language, counts of entity kinds
(e-mails, phone numbers, order ids, customer ids, URLs; never their values) and, for
classification routes, the label parsed from the output (the output-drift signal).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

TokenCounter = Callable[[str], int]

# entities and language are looked for in the head of long prompts only: the cost stays
# bounded (tens of microseconds) whatever the prompt's length
ENTITY_SCAN_CHARS = 2048
LANGUAGE_SCAN_CHARS = 1024
LabelsFor = Callable[[str], Sequence[str]]

# order matters: ids and e-mails/URLs are blanked out before phone numbers are looked for,
# so that "ORD-1234567" is an order id, not a phone number
_ENTITY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("url", re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)),
    ("email", re.compile(r"\b[\w.%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    (
        "order_id",
        re.compile(
            r"\b(?:ORD|ORDER|PO)[-_#]?\d{3,}\b"
            r"|\b(?:order|pedido)\s*(?:#|no\.?|number|num\.?|id|n[uú]mero)?\s*:?\s*#?\s*[A-Z]{0,3}[-_]?\d{4,}\b",
            re.IGNORECASE,
        ),
    ),
    (
        "customer_id",
        re.compile(
            r"\b(?:CUST|CUS|CID|CLI)[-_#]?\d{3,}\b"
            r"|\b(?:customer|cliente|account|cuenta)\s*(?:#|no\.?|number|id|n[uú]mero)\s*:?\s*#?\s*[A-Z]{0,3}[-_]?\d{3,}\b",
            re.IGNORECASE,
        ),
    ),
    ("phone", re.compile(r"(?<![\w+])\+?\d[\d ().-]{5,}\d(?!\w)")),
)
ENTITY_KINDS: tuple[str, ...] = tuple(kind for kind, _ in _ENTITY_PATTERNS)
# one pass over the text: at each position the first alternative that matches wins
_ENTITIES = re.compile(
    "|".join(f"(?P<{kind}>{pattern.pattern})" for kind, pattern in _ENTITY_PATTERNS),
    re.IGNORECASE,
)

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_EN_STOPWORDS = (
    "the a an and or but is are was were be been to of in on at for with from by this "
    "that it its my your our their i you he she we they me him her us them not no do does "
    "did have has had will would can could should please hi hello thanks thank what when "
    "where why how which who there here if as so"
)
_ES_STOPWORDS = (
    "el la los las un una unos unas y o pero es son fue fueron ser estar está están de "
    "del en con por para desde este esta esto ese esa mi mis tu tus su sus nuestro yo tú "
    "él ella nosotros ellos me te se le les lo no sí hola gracias favor qué cuándo dónde "
    "cómo cuál quién hay si como que muy pedido"
)
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(_EN_STOPWORDS.split()),
    "es": frozenset(_ES_STOPWORDS.split()),
}
_SPANISH_MARKS = re.compile(r"[ñ¿¡áéíóú]", re.IGNORECASE)


def detect_language(text: str) -> str:
    """``en``, ``es`` or ``other`` by stopword hits (``unknown`` for text with no words)."""
    words = _WORD.findall(text.lower())
    if not words:
        return "unknown"
    scores = {lang: sum(1 for w in words if w in stop) for lang, stop in _STOPWORDS.items()}
    scores["es"] += len(_SPANISH_MARKS.findall(text))
    best = max(scores, key=lambda lang: scores[lang])
    if scores[best] == 0 or sorted(scores.values())[-2] == scores[best]:
        return "other"
    return best


def count_entities(text: str) -> dict[str, int]:
    """Counts by entity kind (kinds with zero matches are included as 0)."""
    counts = dict.fromkeys(ENTITY_KINDS, 0)
    if not any(ch.isdigit() for ch in text) and "@" not in text and "www" not in text.lower():
        return counts  # every kind needs a digit, an @ or a URL prefix
    for m in _ENTITIES.finditer(text):
        counts[m.lastgroup or ""] += 1
    return counts


def predicted_label(output: str, labels: Sequence[str]) -> str | None:
    """The label an output names: exact (case-insensitive), else the earliest whole-word hit."""
    text = output.strip().lower()
    by_lower = {label.lower(): label for label in labels}
    if text in by_lower:
        return by_lower[text]
    best: tuple[int, str] | None = None
    for low, label in by_lower.items():
        m = re.search(rf"(?<!\w){re.escape(low)}(?!\w)", text)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), label)
    return best[1] if best else None


def compute_features(
    prompt: str | None,
    output: str,
    *,
    prompt_tokens: int | None = None,
    token_counter: TokenCounter | None = None,
    labels: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``input_features`` of one request (see the module docstring)."""
    feats: dict[str, Any] = {"output_chars": len(output)}
    if prompt is not None:
        feats["chars"] = len(prompt)
        feats["words"] = len(prompt.split())
        tokens = prompt_tokens
        if tokens is None and token_counter is not None:
            tokens = token_counter(prompt)
        if tokens is not None:
            feats["tokens"] = tokens
        feats["language"] = detect_language(prompt[:LANGUAGE_SCAN_CHARS])
        feats["entities"] = count_entities(prompt[:ENTITY_SCAN_CHARS])
    if labels:
        feats["predicted_label"] = predicted_label(output, labels)
    return feats
