"""Ollama-compatible API (`/api/chat`, `/api/generate`, `/api/embed`, ...) on the same engine, scheduler and
SLO machinery as the OpenAI routes (docs/SERVER.md, "Ollama users")."""
from sliceserve.server.ollama.router import router

__all__ = ["router"]
