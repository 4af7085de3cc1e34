"""Per-request logit processing before a token is drawn, and log-probabilities of what the model said.

Order (as vLLM applies them): repetition penalty (CTRL, Keskar et al. 2019: divide positive logits,
multiply negative ones, for every token seen in prompt or output), frequency and presence penalties
(OpenAI: subtract `frequency * count + presence * (count > 0)` over output tokens; with `penalty_last_n`, as
llama.cpp and Ollama count them, all three over the last n tokens of prompt and output), logit_bias, min_tokens
(end tokens barred until that many were generated), the grammar's mask, then min_p (drop tokens less
likely than min_p times the most likely one). Temperature, top-k and top-p follow in the sampler.

Log-probabilities are those of the raw model distribution (log-softmax of the unprocessed logits), as
vLLM reports by default: what the model believed, not what the processors allowed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from sliceserve.request import Request

LogprobEntry = tuple[float, list[tuple[int, float]]]
_NEG_INF = float("-inf")


def process(logits: torch.Tensor, req: Request, allowed: np.ndarray | None = None) -> torch.Tensor:
    """A processed copy of 1-D fp32 `logits` for `req`'s next token; `allowed`: the grammar's mask."""
    p = req.sampling_params
    logits = logits.clone()
    out_ids = req.output_token_ids
    counted = out_ids   # what frequency and presence count
    if p.penalty_last_n is not None:
        n = p.penalty_last_n
        counted = (list(req.prompt_token_ids[-n:]) + list(out_ids))[-n:] if n else []
    if p.repetition_penalty != 1.0:
        window = counted if p.penalty_last_n is not None else (*req.prompt_token_ids, *out_ids)
        seen = torch.tensor(sorted(set(window)), dtype=torch.long)
        seen = seen[seen < logits.shape[0]]
        vals = logits[seen]
        logits[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.frequency_penalty or p.presence_penalty) and counted:
        counts = torch.bincount(torch.tensor(counted, dtype=torch.long), minlength=logits.shape[0])
        counts = counts[: logits.shape[0]].to(logits.dtype)
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
    if p.logit_bias:
        ids = torch.tensor([t for t in p.logit_bias if 0 <= t < logits.shape[0]], dtype=torch.long)
        if len(ids):
            logits[ids] += torch.tensor([p.logit_bias[int(t)] for t in ids], dtype=logits.dtype)
    if p.min_tokens and len(out_ids) < p.min_tokens:
        ends = [t for t in end_tokens(req) if 0 <= t < logits.shape[0]]
        logits[ends] = _NEG_INF
    if allowed is not None:
        logits[torch.from_numpy(~allowed[: logits.shape[0]])] = _NEG_INF
    if p.min_p > 0.0:
        probs = logits.softmax(-1)
        logits[probs < p.min_p * probs.max()] = _NEG_INF
    return logits


def end_tokens(req: Request) -> tuple[int, ...]:
    """Tokens that end `req`: its eos (unless ignore_eos) and its stop token ids."""
    eos = () if req.sampling_params.ignore_eos or req.eos_token_id is None else (req.eos_token_id,)
    return eos + tuple(req.sampling_params.stop_token_ids)


def logprob_entry(logits: torch.Tensor, token: int, top: int) -> LogprobEntry:
    """(log p(token), the `top` most likely (id, log p)) under the raw distribution of 1-D `logits`."""
    logp = torch.log_softmax(logits.float(), -1)
    alts: list[tuple[int, float]] = []
    if top > 0:
        vals, ids = torch.topk(logp, top)
        alts = list(zip(ids.tolist(), vals.tolist()))
    return float(logp[token]), alts


def prompt_entries(logits: torch.Tensor, targets: Sequence[int], top: int) -> list[LogprobEntry]:
    """Entries for `targets[i]` predicted by row i of 2-D `logits` (prompt log-probabilities)."""
    logp = torch.log_softmax(logits.float(), -1)
    chosen = logp.gather(1, torch.tensor(list(targets), dtype=torch.long)[:, None]).squeeze(1).tolist()
    if top <= 0:
        return [(c, []) for c in chosen]
    vals, ids = torch.topk(logp, top, dim=-1)
    return [(c, list(zip(i, v))) for c, i, v in zip(chosen, ids.tolist(), vals.tolist())]


def prompt_logprobs(req: Request, logits: torch.Tensor, pos: int) -> dict[int, LogprobEntry]:
    """Entries for the prompt positions that rows of a chunk starting at `pos` predict: row i (position
    pos + i) predicts prompt token pos + i + 1."""
    prompt = req.prompt_token_ids
    n = min(logits.shape[0], len(prompt) - 1 - pos)
    if n <= 0:
        return {}
    entries = prompt_entries(logits[:n], prompt[pos + 1: pos + 1 + n], req.sampling_params.prompt_logprobs or 0)
    return {pos + 1 + i: e for i, e in enumerate(entries)}
