"""Engines that serve one pinned base model with resident LoRA adapters."""
