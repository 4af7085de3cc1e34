"""Constrained requests in a benchmark workload (`sliceserve bench --constrained-fraction F`).

A seeded fraction of the requests gets a grammar: JSON records, one per line, `{"id": N, "ok": true}` with
free text in a `note` field, repeated. The local bench forces every output to the workload's length (EOS
ignored); this grammar never has to end, so constrained requests do exactly the work unconstrained ones do
and the difference measured is the cost of computing and applying a token mask per constrained row.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sliceserve.request import Request

RECORDS_REGEX = r'(\{"id": [0-9]{1,6}, "ok": (true|false), "note": "[a-zA-Z0-9 ,.]{0,40}"\}\n)+'


def constrain(reqs: list[Request], fraction: float, seed: int, tokenizer: Any) -> int:
    """Give a seeded `fraction` of `reqs` the records grammar (compiled here, before any step); returns how many."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"constrained fraction must be in [0, 1], got {fraction}")
    if fraction == 0.0:
        return 0
    from sliceserve.model.guided import StructuredOutputs, compile_matcher

    spec = StructuredOutputs(regex=RECORDS_REGEX)
    compile_matcher(spec, tokenizer)
    rng = np.random.default_rng([seed, 18])
    chosen = rng.random(len(reqs)) < fraction
    for req, pick in zip(reqs, chosen):
        if pick:
            req.sampling_params.structured_outputs = spec
    return int(chosen.sum())
