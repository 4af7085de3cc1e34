"""Incremental detokenisation to spot stop strings as soon as the token completing one is sampled.

Tokens are decoded from a short window ending at the newest token; text is only committed once it no
longer ends in U+FFFD, because a byte-level BPE token may carry half of a multi-byte character.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Tokens kept before the unread ones so the tokenizer sees enough context (leading spaces, merges).
_CONTEXT_TOKENS = 6


@dataclass(slots=True)
class StopStringState:
    stops: tuple[str, ...]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    prefix_offset: int = 0   # window start
    read_offset: int = 0     # tokens before this are in `text`

    def push(self, tokenizer, token_id: int) -> bool:
        """Add one output token; True when a stop string now occurs in the text (it ends in the new part)."""
        self.token_ids.append(token_id)
        window = self.token_ids[self.prefix_offset:]
        before = tokenizer.decode(self.token_ids[self.prefix_offset:self.read_offset], skip_special_tokens=False)
        full = tokenizer.decode(window, skip_special_tokens=False)
        if full.endswith("\ufffd") or len(full) < len(before):
            return False  # incomplete character: wait for the next token
        new = full[len(before):]
        old_len = len(self.text)
        self.text += new
        self.read_offset = len(self.token_ids)
        self.prefix_offset = max(0, self.read_offset - _CONTEXT_TOKENS)
        longest = max(len(s) for s in self.stops)
        # Only a match overlapping the new text counts: earlier ones would have stopped already.
        tail = self.text[max(0, old_len - longest + 1):]
        return any(s in tail for s in self.stops)
