"""HTTP API: OpenAI-compatible endpoints, health, error mapping and injected dependencies."""
