"""The offline demo: a tiny base, a synthetic support-ticket triage task, two LoRA adapters.

``demo.task`` holds the task's contract (labels, prompt, completion format) and is
cheap to import; ``demo.build.build_demo`` builds a whole home (torch is imported
lazily there).
"""

from __future__ import annotations

from lora_router.demo.task import (
    COMPLETION_TEMPLATE,
    LABELS,
    PROMPT_TEMPLATE,
    format_completion,
    format_prompt,
    parse_label,
)

__all__ = [
    "COMPLETION_TEMPLATE",
    "LABELS",
    "PROMPT_TEMPLATE",
    "format_completion",
    "format_prompt",
    "parse_label",
]
