"""Sampler and stop strings."""
from __future__ import annotations

import torch

from sliceserve.model.sampler import filter_logits, sample
from sliceserve.request import SamplingParams
from tests.model.helpers import run_engine


def _logits(seed: int = 0, vocab: int = 50) -> torch.Tensor:
    return torch.randn(vocab, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_is_argmax():
    logits = _logits()
    assert sample(logits, SamplingParams(), seed=1, index=0) == int(logits.argmax())


def test_top_k_restricts_support():
    logits = _logits()
    params = SamplingParams(temperature=1.0, top_k=5)
    allowed = set(torch.topk(logits, 5).indices.tolist())
    kept = torch.isfinite(filter_logits(logits, params)).nonzero().flatten().tolist()
    assert set(kept) == allowed
    draws = {sample(logits, params, seed=7, index=i) for i in range(300)}
    assert draws <= allowed and len(draws) > 1


def test_top_p_keeps_smallest_covering_set():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = torch.isfinite(filter_logits(logits, SamplingParams(temperature=1.0, top_p=0.7)))
    assert kept.tolist() == [True, True, False, False]
    kept = torch.isfinite(filter_logits(logits, SamplingParams(temperature=1.0, top_p=0.1)))
    assert kept.tolist() == [True, False, False, False]


def test_seed_reproducible_and_seeds_differ():
    logits = _logits(vocab=1000) / 3
    params = SamplingParams(temperature=1.0)
    a = [sample(logits, params, seed=3, index=i) for i in range(20)]
    assert a == [sample(logits, params, seed=3, index=i) for i in range(20)]
    assert a != [sample(logits, params, seed=4, index=i) for i in range(20)]


def test_temperature_sharpens():
    logits = _logits(vocab=20)
    top = int(logits.argmax())
    cold = sum(sample(logits, SamplingParams(temperature=0.05), seed=1, index=i) == top for i in range(100))
    hot = sum(sample(logits, SamplingParams(temperature=5.0), seed=1, index=i) == top for i in range(100))
    assert cold > 95 and hot < cold


def test_stop_string_ends_request_on_completing_token(tiny_llama):
    tok = tiny_llama.tokenizer
    prompt = tok.encode("The quick brown fox jumps over")
    free = run_engine(tiny_llama, [prompt], SamplingParams(max_tokens=20, ignore_eos=True))[0][0].output_token_ids
    text = tok.decode(free)
    # A stop string that ends inside the 8th token's text: the request must end exactly at that token.
    end8 = len(tok.decode(free[:8]))
    start = len(tok.decode(free[:7]))
    stop = text[max(0, end8 - 3):end8] if end8 - start >= 1 else text[:end8]
    first = next(i for i in range(1, 21) if stop in tok.decode(free[:i]))
    req = run_engine(tiny_llama, [prompt], SamplingParams(max_tokens=20, ignore_eos=True, stop=(stop,)))[0][0]
    assert req.output_token_ids == free[:first]
    assert req.finish_reason.value == "stop"


def test_stop_token_ids_and_eos(tiny_llama):
    prompt = tiny_llama.tokenizer.encode("Paris is the capital of")
    free = run_engine(tiny_llama, [prompt], SamplingParams(max_tokens=12, ignore_eos=True))[0][0].output_token_ids
    req = run_engine(tiny_llama, [prompt], SamplingParams(max_tokens=12, stop_token_ids=(free[4],)))[0][0]
    assert req.output_token_ids == free[:free.index(free[4]) + 1]
    assert req.finish_reason.value == "stop"
