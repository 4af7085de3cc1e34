"""SLICE prices prompt work per piece, each over its own prompt's cached part (sliceserve.core.latency_shapes): the
iteration fill's chunk budget for a late chunk of a long prompt is smaller than for a fresh one, on a model whose
prompt cost includes attention per (query, key) pair (the CPU profiles); the paper profile has no such term."""
from __future__ import annotations

from sliceserve.core.latency import LatencyModel
from tests.slice.conftest import make_slice

CPU_ATTN = LatencyModel([0.02] * 16, prefill_base_s=0.02, prefill_per_token_s=1e-3, prefill_attn_s=1.2e-6)


def test_the_chunk_budget_of_a_late_chunk_counts_its_attention_over_the_cached_part():
    sched = make_slice(CPU_ATTN.copy())
    fresh = sched._tokens_within(0.6, 0, 0.0, cached=0)
    late = sched._tokens_within(0.6, 0, 0.0, cached=1536)
    # A fresh prompt: 0.02 + n ms + 1.2 us * n(n+1)/2 <= 0.6 s -> ~430 tokens; after 1,536 cached each token
    # also reads 1,536 keys (+1.8 ms): ~200.
    assert CPU_ATTN.prefill_time(fresh) <= 0.6 < CPU_ATTN.prefill_time(fresh + 1)
    assert CPU_ATTN.prefill_time(late, 1536) <= 0.6 < CPU_ATTN.prefill_time(late + 1, 1536)
    assert late < 0.5 * fresh
    # Beside 256 tokens of another prompt already in the iteration: no pairs between the two prompts, so the
    # budget is what the allowance left by the other prompt buys alone (one 256 + n sequence would buy less).
    beside = sched._tokens_within(0.6, 256, 256 * 257 / 2, cached=0)
    alone = sched._tokens_within(0.6 - CPU_ATTN.prefill_time(256) + CPU_ATTN.prefill_base_s, 0, 0.0, cached=0)
    assert abs(beside - alone) <= 1
    assert CPU_ATTN.prefill_time(256 + beside) > 0.6
