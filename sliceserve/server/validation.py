"""Per-request checks beyond the pydantic types: every value the sampler and the scheduler will use is
within what they can do, so one client's nonsense is a 400 naming the field, never a failed batch.

Ranges follow OpenAI where it defines one (penalties in [-2, 2]) and vLLM otherwise (temperatures below
1e-5 sample greedily: at that temperature the distribution already is the argmax, and dividing logits by
a subnormal overflows to inf -> NaN probabilities for the whole batch).
"""
from __future__ import annotations

from typing import Any

from sliceserve.server.protocol import APIError, ChatRequest, CompletionRequest

# vLLM's _SAMPLING_EPS: below it a temperature means greedy.
GREEDY_BELOW = 1e-5
SEED_LIMIT = 2 ** 63                 # seeds feed a 64-bit generator
PENALTY_RANGE = (-2.0, 2.0)          # OpenAI's frequency_penalty / presence_penalty
_PENALTIES = ("frequency_penalty", "presence_penalty")


def _bad(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def check_strings(data: Any) -> None:
    """Reject lone UTF-16 surrogates ("\\ud800") anywhere in the parsed body: no tokenizer can encode them.
    Iterative, so a deeply nested body cannot exhaust the stack here."""
    todo: list[tuple[str, Any]] = [("", data)]
    while todo:
        path, value = todo.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise _bad(path or "body", f"{path or 'body'} holds a lone surrogate (not valid Unicode text)")
        elif isinstance(value, dict):
            for k, v in value.items():
                todo.append((f"{path}.{k}" if path else str(k), k))
                todo.append((f"{path}.{k}" if path else str(k), v))
        elif isinstance(value, list):
            todo.extend((f"{path}[{i}]", v) for i, v in enumerate(value))


def check_penalties(data: dict[str, Any]) -> None:
    """OpenAI's penalty ranges, checked on the raw body so they hold whichever model class parses it."""
    lo, hi = PENALTY_RANGE
    for name in _PENALTIES:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
            raise _bad(name, f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")


def check_sampling(body: CompletionRequest | ChatRequest, vocab_size: int) -> CompletionRequest | ChatRequest:
    """The body with tiny temperatures made greedy; APIError for any value the sampler cannot honour."""
    if body.top_k > vocab_size:
        raise _bad("top_k", f"top_k must be at most the vocabulary size {vocab_size} (0 disables it), "
                            f"got {body.top_k}")
    if body.seed is not None and not 0 <= body.seed < SEED_LIMIT:
        raise _bad("seed", f"seed must be in [0, 2^63), got {body.seed}")
    for i, t in enumerate(body.stop_token_ids or ()):
        if not 0 <= t < vocab_size:
            raise _bad(f"stop_token_ids[{i}]", f"stop token id {t} is outside the vocabulary (0..{vocab_size - 1})")
    if 0 < body.temperature < GREEDY_BELOW:
        body = body.model_copy(update={"temperature": 0.0})
    return body


def prompt_chars(body: CompletionRequest | ChatRequest) -> int:
    """Characters of text the prompt holds (0 for token ids): bounds its token count from below."""
    if isinstance(body, ChatRequest):
        total = 0
        for m in body.messages:
            if isinstance(m.content, str):
                total += len(m.content)
            elif m.content:
                total += sum(len(p["text"]) for p in m.content if isinstance(p.get("text"), str))
        return total
    prompt = body.prompt
    if isinstance(prompt, str):
        return len(prompt)
    return sum(len(p) for p in prompt if isinstance(p, str))


def longest_token_chars(tokenizer: Any) -> int | None:
    """Characters of the vocabulary's longest token: a text of n characters has at least n / this many
    tokens (byte-level pieces spell one byte per character, and a decoded character is at least one byte)."""
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return None
    return max((len(t) for t in vocab), default=None)


def check_prompt_length(body: CompletionRequest | ChatRequest, max_model_len: int, max_token_chars: int | None) -> None:
    """Refuse a prompt that certainly exceeds max_model_len before paying to tokenise it."""
    if max_token_chars is None:
        return
    chars = prompt_chars(body)
    if chars > max_model_len * max_token_chars:
        param = "messages" if isinstance(body, ChatRequest) else "prompt"
        raise APIError(400, f"prompt has {chars} characters: more than max_model_len {max_model_len} tokens "
                            f"even at {max_token_chars} characters a token; shorten the prompt",
                       param=param, code="context_length_exceeded")
