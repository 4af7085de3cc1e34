"""Incremental detokenisation for streaming, with stop strings cut out of the text.

Re-decoding the whole output each time is the simple correct way with byte-level BPE (a token may end in
the middle of a UTF-8 character); outputs here are short, so the quadratic cost does not matter. Text
ending in U+FFFD is held back until the character completes. Text that could be the start of a stop
string is held back too, so a stop string never reaches the client.
"""
from __future__ import annotations

from typing import Any


class Detokenizer:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.token_ids: list[int] = []
        self.sent = 0              # characters of the final text already emitted
        self.stopped = False

    def _text(self) -> str:
        return self.tokenizer.decode(self.token_ids, skip_special_tokens=True)

    def push(self, new_token_ids: list[int], final: bool = False) -> str:
        """Add tokens; returns the text that can be sent now."""
        if self.stopped:
            return ""
        self.token_ids.extend(new_token_ids)
        text = self._text()
        limit = len(text)
        for s in self.stop:
            at = text.find(s)
            if at != -1 and at < limit:
                limit = at
                self.stopped = True
        if not self.stopped and not final:
            if text.endswith("\ufffd"):
                limit = len(text) - 1
            limit = min(limit, len(text) - self._stop_prefix_len(text))
        out = text[self.sent:limit] if limit > self.sent else ""
        self.sent = max(self.sent, limit)
        return out

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest tail of `text` that begins some stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if s.startswith(text[-n:]):
                    best = n
                    break
        return best
