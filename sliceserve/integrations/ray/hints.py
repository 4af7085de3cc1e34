"""Routing hints from a raw OpenAI request (body bytes + headers), read by the forwarding ingress.

Only what the router needs, read leniently: a malformed body yields an empty hint and the replica's own
HTTP layer (sliceserve/server) answers it with the proper 400. Prompt length is estimated without a
tokenizer (the ingress holds no model): token-id prompts are exact, text counts ~4 characters per token,
the usual rule of thumb for English BPE vocabularies.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

from sliceserve.integrations.ray.routing import RequestHint
from sliceserve.server.requests import HEADER_SLO, HEADER_TPOT, HEADER_TTFT
from sliceserve.slo import SLO, parse_slo

_CHARS_PER_TOKEN = 4.0
_CHAT_DEFAULT_MAX_TOKENS = 256   # the server's default_max_tokens default (server/settings.py)


def _positive(value: Any, scale: float = 1e-3) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v * scale if math.isfinite(v) and v > 0 else None


def _text_slo(text: Any) -> SLO:
    """Request-scope SLO text (the one grammar); anything unreadable is no hint (the replica answers 400)."""
    try:
        return parse_slo(text, scope="request").request_slo() if isinstance(text, str) else SLO()
    except ValueError:
        return SLO()


def _text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / _CHARS_PER_TOKEN))


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return _text_tokens(prompt[0])
    if isinstance(prompt, str):
        return _text_tokens(prompt)
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = 0
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
        # Chat templates add a few tokens of markup per message.
        return _text_tokens(" " * chars) + 4 * len(messages)
    return 1


def hint_from_request(body: bytes, headers: Mapping[str, str]) -> RequestHint:
    """The routing hint of one request; precedence of SLO bounds as in server/requests.py (body > headers)."""
    try:
        data = json.loads(body) if body else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    slo = SLO(ttft_s=_positive(headers.get(HEADER_TTFT)), tpot_s=_positive(headers.get(HEADER_TPOT)))
    slo = slo.merged(_text_slo(headers.get(HEADER_SLO)))
    body_slo = data.get("slo")
    if isinstance(body_slo, str):
        body_slo = {"expr": body_slo}
    if isinstance(body_slo, dict):
        slo = slo.merged(SLO(_positive(body_slo.get("ttft_ms")), _positive(body_slo.get("tpot_ms")),
                             _positive(body_slo.get("e2e_ms"))).merged(_text_slo(body_slo.get("expr"))))
    slo_class = data.get("slo_class") if isinstance(data.get("slo_class"), str) else None
    utility = _positive(data.get("utility"), scale=1.0)
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        max_tokens = 16 if "prompt" in data else _CHAT_DEFAULT_MAX_TOKENS
    return RequestHint(slo_class, slo, utility, _prompt_tokens(data), max_tokens)
