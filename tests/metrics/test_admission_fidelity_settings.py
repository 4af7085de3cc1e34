"""benchmarks/admission_fidelity.py's `--set`: scheduler fields on top of the server's reach the simulated server
(the reject run and its best_effort replays alike), read as `sliceserve simulate --set` reads them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sliceserve.core.latency import load_profile
from sliceserve.request import FinishReason

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
_spec = importlib.util.spec_from_file_location("admission_fidelity", _BENCH / "admission_fidelity.py")
admission_fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(admission_fidelity)


def _run(settings: dict | None) -> list:
    return admission_fidelity.run_once(load_profile("cpu-epyc-int8"), 2.0, 20.0, 1, "reject", 0.0, False,
                                       settings=settings)


def test_settings_reach_the_scheduler():
    with pytest.raises(ValueError, match="no_such_field"):
        _run({"no_such_field": 1})
    # One sequence at a time at 2 req/s (~2.6x the sustainable rate of 16): every request still ends, and fewer
    # are served than with the server's 16.
    default, single = _run(None), _run({"max_num_seqs": 1})
    assert all(r.finish_reason is not None for r in single)
    served = lambda reqs: sum(r.finish_reason in (FinishReason.STOP, FinishReason.LENGTH) for r in reqs)
    assert served(single) < served(default)


def test_the_policy_reaches_the_simulated_server():
    """`--policy`: the same arrivals served by another policy. SLICE refuses admitted work once its TTFT has
    passed (`slice_reject_lost`, with `reject`); FCFS vLLM never does, so its refusals all come from the door."""
    kinds = lambda reqs: {admission_fidelity.refusal_kind(r.error or "") for r in reqs
                          if r.finish_reason is FinishReason.REJECTED}
    run = lambda policy: admission_fidelity.run_once(load_profile("cpu-epyc-int8"), 2.0, 60.0, 1, "reject", 0.0,
                                                     False, policy=policy)
    assert "policy (ttft lost)" in kinds(run(None))
    vllm = kinds(run("vllm"))
    assert vllm and "policy (ttft lost)" not in vllm and vllm <= {"admission", "queue full", "queue timeout"}
