"""Training: the deterministic LoRA trainer, the shared optimisation loop,
and ``reproduce`` (re-run a run manifest's training and compare the bytes).

A tool used by the demo and by the CLI's ``registry reproduce``; the gateway never
imports it.
"""
