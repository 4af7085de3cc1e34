"""OpenAI-compatible HTTP server with per-request SLOs (see docs/SERVER.md)."""
