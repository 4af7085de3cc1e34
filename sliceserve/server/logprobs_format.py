"""Log-probabilities in OpenAI's shapes.

Chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}],
"refusal": null}`. Completions: `{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}],
"text_offset"}`, with the prompt's tokens first under `echo` (the first has no logprob: nothing predicts it).
"""
from __future__ import annotations

from typing import Any, Sequence

Entry = tuple[float, list[tuple[int, float]]]


def _piece(tokenizer: Any, token: int) -> str:
    return tokenizer.decode([token], skip_special_tokens=False)


def _finite(x: float) -> float:
    return x if x > -9999.0 else -9999.0     # JSON has no -inf; OpenAI floors at -9999 too


def chat_content(tokenizer: Any, token_ids: Sequence[int], entries: Sequence[Entry]) -> list[dict[str, Any]]:
    out = []
    for token, (lp, alts) in zip(token_ids, entries):
        text = _piece(tokenizer, token)
        out.append({"token": text, "logprob": _finite(lp), "bytes": list(text.encode()),
                    "top_logprobs": [{"token": (t := _piece(tokenizer, i)), "logprob": _finite(v),
                                      "bytes": list(t.encode())} for i, v in alts]})
    return out


def completion_logprobs(tokenizer: Any, token_ids: Sequence[int], entries: Sequence[Entry | None],
                        offset: int = 0) -> dict[str, Any]:
    """Shape for `token_ids` (prompt tokens with None entries allowed); text offsets start at `offset`."""
    tokens, lps, tops, offsets = [], [], [], []
    for token, entry in zip(token_ids, entries):
        text = _piece(tokenizer, token)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        if entry is None:
            lps.append(None)
            tops.append(None)
            continue
        lp, alts = entry
        lps.append(_finite(lp))
        top = {_piece(tokenizer, i): _finite(v) for i, v in alts}
        tops.append(top)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def merge(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Completions logprobs of two consecutive spans as one."""
    if a is None:
        return b
    return {k: a[k] + b[k] for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
