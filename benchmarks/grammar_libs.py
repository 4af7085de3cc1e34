"""Which structured-output library: compile time per JSON schema and per-token mask time on the embedded
SmolLM2 tokenizer (49k vocab), for llguidance, xgrammar and outlines-core (whichever are installed).

Each schema is compiled, then a valid instance is tokenised and walked token by token, computing the
next-token mask at every step (what the sampler does per constrained row). Prints medians in ms.
Run: .venv/bin/python benchmarks/grammar_libs.py
"""
from __future__ import annotations

import json
import os
import statistics
import time

SCHEMAS = [
    ({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
      "required": ["name", "age"]}, {"name": "Ada Lovelace", "age": 36}),
    ({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}},
                                       "score": {"type": "number"}}, "required": ["tags", "score"]},
     {"tags": ["edge", "robot", "sensor"], "score": 0.875}),
    ({"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                       "pos": {"type": "object", "properties": {"x": {"type": "number"},
                                                                                "y": {"type": "number"}},
                                               "required": ["x", "y"]}}, "required": ["color", "pos"]},
     {"color": "green", "pos": {"x": 1.5, "y": -2.25}}),
    ({"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["id", "ok"]}}}, "required": ["items"]},
     {"items": [{"id": 1, "ok": True}, {"id": 2, "ok": False}, {"id": 3, "ok": True}]}),
]


def hf_tokenizer():
    from transformers import AutoTokenizer

    from sliceserve.model.cache import gguf_tokenizer_dir
    from sliceserve.model.loader import default_model_path

    return AutoTokenizer.from_pretrained(str(gguf_tokenizer_dir(default_model_path())))


def bench_llguidance(tok, schema, ids):
    import llguidance
    import llguidance.hf
    import llguidance.numpy as lnp

    lltok = _cache.setdefault("ll", llguidance.hf.from_tokenizer(tok))
    t0 = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
    m = llguidance.LLMatcher(lltok, grammar)
    mask = lnp.allocate_token_bitmask(1, lltok.vocab_size)
    lnp.fill_next_token_bitmask(m, mask, 0)   # the first mask pays the lazy parse
    compile_s = time.perf_counter() - t0
    steps = []
    for t in ids:
        assert m.consume_token(t), m.get_error()
        s = time.perf_counter()
        lnp.fill_next_token_bitmask(m, mask, 0)
        steps.append(time.perf_counter() - s)
    return compile_s, steps


def bench_xgrammar(tok, schema, ids):
    import xgrammar as xgr

    info = _cache.setdefault("xg", xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok)))
    comp = _cache.setdefault("xgc", xgr.GrammarCompiler(info, cache_enabled=False))
    t0 = time.perf_counter()
    compiled = comp.compile_json_schema(json.dumps(schema))
    m = xgr.GrammarMatcher(compiled)
    mask = xgr.allocate_token_bitmask(1, info.vocab_size)
    m.fill_next_token_bitmask(mask)
    compile_s = time.perf_counter() - t0
    steps = []
    for t in ids:
        assert m.accept_token(t)
        s = time.perf_counter()
        m.fill_next_token_bitmask(mask)
        steps.append(time.perf_counter() - s)
    return compile_s, steps


def _byte_vocab(tok):
    """token bytes -> ids, undoing GPT-2's byte-to-unicode mapping."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    dec = {v: k for k, v in bytes_to_unicode().items()}
    out: dict[bytes, list[int]] = {}
    for piece, i in tok.get_vocab().items():
        if i == tok.eos_token_id or piece in tok.all_special_tokens:
            continue
        try:
            out.setdefault(bytes(dec[c] for c in piece), []).append(i)
        except KeyError:
            continue
    return out


def bench_outlines(tok, schema, ids):
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    vocab = _cache.setdefault("oc", Vocabulary(tok.eos_token_id, _byte_vocab(tok)))
    t0 = time.perf_counter()
    index = Index(build_regex_from_schema(json.dumps(schema)), vocab)
    guide = Guide(index)
    guide.get_tokens()
    compile_s = time.perf_counter() - t0
    steps = []
    for t in ids:
        guide.advance(t)
        s = time.perf_counter()
        guide.get_tokens()   # the allowed ids: what a mask is built from
        steps.append(time.perf_counter() - s)
    return compile_s, steps


_cache: dict = {}


def main() -> None:
    tok = hf_tokenizer()
    print(f"vocab {len(tok)}; loadavg {open('/proc/loadavg').read().split()[:3]}")
    for name, fn in (("llguidance", bench_llguidance), ("xgrammar", bench_xgrammar),
                     ("outlines-core", bench_outlines)):
        compiles, steps = [], []
        try:
            for schema, instance in SCHEMAS:
                ids = tok.encode(json.dumps(instance), add_special_tokens=False)
                c, s = fn(tok, schema, ids)
                compiles.append(c)
                steps.extend(s)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other libraries
            print(f"{name:14s} failed: {type(exc).__name__}: {exc}")
            continue
        print(f"{name:14s} compile median {statistics.median(compiles) * 1e3:8.1f} ms  max "
              f"{max(compiles) * 1e3:8.1f} ms | mask per token median {statistics.median(steps) * 1e3:6.3f} ms  "
              f"p90 {sorted(steps)[int(0.9 * len(steps))] * 1e3:6.3f} ms  ({len(steps)} tokens)")
    print(f"loadavg after {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
    row_cost()


def row_cost() -> None:
    """What one constrained row adds to a sampling step in sliceserve: RequestSampling.choose with the
    records grammar (mask + processing) vs a plain greedy row (argmax), on 49k-vocab logits."""
    import torch

    from sliceserve.bench.constrained import RECORDS_REGEX
    from sliceserve.model.guided import StructuredOutputs
    from sliceserve.model.request_sampling import RequestSampling
    from sliceserve.request import Request, SamplingParams

    torch.set_num_threads(1)
    tok = hf_tokenizer()
    sampling = RequestSampling(tok, 0)
    spec = StructuredOutputs(regex=RECORDS_REGEX)
    req = Request("r", [1], SamplingParams(max_tokens=10_000, ignore_eos=True, structured_outputs=spec), 0.0)
    logits = torch.randn(len(tok))
    plain, guided = [], []
    for _ in range(200):
        s = time.perf_counter()
        int(torch.argmax(logits))
        plain.append(time.perf_counter() - s)
        s = time.perf_counter()
        token, _ = sampling.choose(req, logits)
        guided.append(time.perf_counter() - s)
        req.output_token_ids.append(token)
    print(f"per row: plain greedy {statistics.median(plain) * 1e3:.3f} ms, grammar-constrained "
          f"{statistics.median(guided) * 1e3:.3f} ms (median of 200 steps); loadavg {os.getloadavg()[0]:.2f}")
