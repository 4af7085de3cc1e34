"""Constrained decoding with llguidance: a grammar (JSON schema, regex, choice list, Lark or GBNF) that
every sampled token must obey, applied as a token mask in the sampling step.

Why llguidance (measured in benchmarks/grammar_libs.py, docs/STRUCTURED_OUTPUT.md): on the embedded 49k
vocabulary it compiled a JSON schema in ~5 ms (xgrammar ~13 ms, outlines-core ~83 ms) and computes a mask
in ~0.01-0.05 ms per token, far below a 60-180 ms CPU decode step; it depends on nothing but numpy (xgrammar
pulls triton), and its Lark grammars embed JSON schemas, which tool calling needs.

Compilation (`compile_matcher`) is cached by grammar text and done off the scheduling path (the server
compiles in a worker thread before submitting); each request then deep-copies the primed matcher.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
# Compact JSON: a tiny model given free whitespace can emit newlines until max_tokens runs out.
_JSON_OPTIONS = {"whitespace_flexible": False}
_MAX_CACHED = 256


class GrammarError(ValueError):
    """The grammar or schema cannot be compiled (the server answers 400)."""


@dataclass(frozen=True)
class StructuredOutputs:
    """One of: a JSON schema (`json`), any JSON object (`json_object`), a regex, a list of choices, or a
    Lark / GBNF grammar (`grammar`). The same shape as vLLM's StructuredOutputsParams."""
    json: Any = None
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    json_object: bool = False

    def __post_init__(self) -> None:
        given = [k for k in ("json", "regex", "choice", "grammar") if getattr(self, k) is not None]
        if self.json_object:
            given.append("json_object")
        if len(given) != 1:
            raise GrammarError(f"give exactly one of json, regex, choice, grammar, json_object (got {given})")
        if self.choice is not None:
            if not self.choice or not all(isinstance(c, str) for c in self.choice):
                raise GrammarError("choice must be a non-empty list of strings")
            object.__setattr__(self, "choice", tuple(self.choice))

    def grammar_text(self) -> str:
        """The llguidance grammar (its JSON form) this asks for."""
        from llguidance import LLMatcher
        from llguidance.gbnf_to_lark import any_to_lark

        try:
            if self.json is not None or self.json_object:
                schema = {"type": "object"} if self.json_object else self.json
                if isinstance(schema, str):
                    schema = json.loads(schema)
                schema = closed(schema)
                return LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)
            if self.regex is not None:
                return LLMatcher.grammar_from_regex(self.regex)
            if self.choice is not None:
                return LLMatcher.grammar_from_regex("|".join(re.escape(c) for c in self.choice))
            return LLMatcher.grammar_from_lark(any_to_lark(self.grammar))   # Lark, or GBNF (llama.cpp's)
        except GrammarError:
            raise
        except Exception as exc:  # noqa: BLE001 - llguidance raises plain ValueError/RuntimeError
            raise GrammarError(f"invalid grammar: {exc}") from None


_lock = threading.Lock()
_tokenizers: dict[int, Any] = {}
_compiled: dict[tuple[int, str], Any] = {}


def ll_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a Hugging Face tokenizer (built once per tokenizer: ~0.3 s for 49k tokens)."""
    key = id(tokenizer)
    with _lock:
        if key not in _tokenizers:
            import llguidance.hf

            _tokenizers[key] = llguidance.hf.from_tokenizer(tokenizer)
        return _tokenizers[key]


def compile_matcher(spec: StructuredOutputs | str, tokenizer: Any) -> Any:
    """A primed llguidance matcher for `spec` (cached); callers deep-copy it. Raises GrammarError."""
    from llguidance import LLMatcher

    grammar = spec if isinstance(spec, str) else spec.grammar_text()
    key = (id(tokenizer), grammar)
    with _lock:
        hit = _compiled.get(key)
    if hit is not None:
        return hit
    lltok = ll_tokenizer(tokenizer)
    message = LLMatcher.validate_grammar(grammar, lltok)
    if message:
        raise GrammarError(f"invalid grammar: {message}")
    matcher = LLMatcher(lltok, grammar)
    if matcher.is_error():
        raise GrammarError(f"invalid grammar: {matcher.get_error()}")
    matcher.compute_bitmask()   # the first mask pays the lazy parse: here, not in a serving step
    with _lock:
        if len(_compiled) >= _MAX_CACHED:
            _compiled.pop(next(iter(_compiled)))
        _compiled[key] = matcher
    return matcher


class GuidedState:
    """One request's matcher: the mask of allowed next tokens, advanced by each sampled token."""

    def __init__(self, spec: StructuredOutputs, tokenizer: Any, eos_ids: tuple[int, ...]) -> None:
        self.matcher = compile_matcher(spec, tokenizer).deep_copy()
        lltok = ll_tokenizer(tokenizer)
        self.vocab = lltok.vocab_size
        self.eos_ids = eos_ids       # the request's end tokens: allowed whenever the grammar may end
        # llguidance allows its tokenizer's end tokens where the grammar may end; the request decides which
        # end tokens count (none with ignore_eos), so those bits are cleared.
        self.ll_eos = [t for t in lltok.eos_tokens if t not in eos_ids]
        self.num_consumed = 0

    def allowed(self, vocab: int) -> np.ndarray:
        """Boolean mask over the model's `vocab` logits (rows past the tokenizer are never allowed)."""
        out = np.zeros(vocab, dtype=bool)
        if self.matcher.is_stopped() or self.matcher.is_accepting():
            out[[t for t in self.eos_ids if t < vocab]] = True
        if not self.matcher.is_stopped():
            bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
            mask = np.unpackbits(bits, bitorder="little")[: min(self.vocab, vocab)].astype(bool)
            mask[[t for t in self.ll_eos if t < len(mask)]] = False
            out[: len(mask)] |= mask
        if not out.any():    # the grammar is in an error state: only ending is left
            out[[t for t in self.eos_ids if t < vocab]] = True
        return out

    @property
    def done(self) -> bool:
        """No token may follow: the grammar is complete, or (never expected) the matcher failed."""
        return self.matcher.is_stopped()

    def advance(self, token: int) -> None:
        self.num_consumed += 1
        if token in self.eos_ids:
            return
        if not self.matcher.consume_token(token):
            # Only a token outside the mask gets here (a bug, not bad input): the matcher is now in its
            # error state, which reads as stopped, so the request ends instead of failing the whole batch.
            log.error("grammar rejected token %d: %s", token, self.matcher.get_error())


def closed(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object that lists properties and says nothing
    else, as OpenAI's strict mode requires. Every output still validates against the original schema; it
    just never invents properties: a small model otherwise fills objects with keys copied from the prompt
    until max_tokens runs out (measured: the 20-schema test hit `length` on a nested object)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (closed(v) if k in ("items", "anyOf", "oneOf", "allOf", "prefixItems") else v)
           for k, v in schema.items()}
    for key in ("properties", "$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            out[key] = {name: closed(sub) for name, sub in schema[key].items()}
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out
