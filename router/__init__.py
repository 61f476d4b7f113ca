"""lora-router: the gateway (OpenAI API), route flags, inference log, drift, and CLI."""

__version__ = "0.1.0"
