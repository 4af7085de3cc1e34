"""benchmarks/replay_latency.py replays a live run's iterations through the latency model offline, learning as the
server does, from the model the server started with (`start_model` in live_fidelity.py's records file)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sliceserve.core.latency import IterationSample, LatencyModel
from sliceserve.metrics.latency_audit import iteration_kind

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
_spec = importlib.util.spec_from_file_location("replay_latency", _BENCH / "replay_latency.py")
replay_latency = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(replay_latency)

START = LatencyModel([0.020, 0.030, 0.040, 0.050], ctx_coef_s=1e-5, prefill_base_s=0.02,
                     prefill_per_token_s=1e-3, prefill_attn_s=1e-6, name="start")


def _records(truth: LatencyModel, n: int = 400) -> list:
    """Iterations shaped as the live poller stores them, timed by `truth`."""
    out = []
    for i in range(n):
        if i % 3:   # a decode step of 1-4 requests
            decodes, tokens, ctx, prefix = 1 + i % 4, 0, 100.0 + i, 0.0
        else:       # a prompt chunk, alone or beside one decode
            decodes, tokens, ctx, prefix = i % 2, 16 + 8 * (i % 7), 200.0, 64.0 * (i % 5)
        sample = IterationSample(decodes, ctx, tokens, 0.0, prefix)
        sample.seconds = truth.sample_time(sample)
        out.append((float(i), iteration_kind(sample), 0.0, sample.seconds, decodes, tokens, ctx, prefix))
    return out


def test_replay_from_the_truth_predicts_every_iteration():
    replayed, _ = replay_latency.replay(START, _records(START))
    assert max(abs(p / m - 1) for _, _, p, m, *_ in replayed) < 1e-9


def test_replay_learns_a_slower_device_as_the_server_would():
    truth = START.copy()
    truth.decode_factor, truth.prefill_factor = 1.4, 0.8
    records = _records(truth)
    replayed, end = replay_latency.replay(START, records)
    errors = [abs(p / m - 1) for _, _, p, m, *_ in replayed]
    first_decode = next(e for e, r in zip(errors, replayed) if r[1] == "decode")
    assert first_decode > 0.2                 # the start model prices decode at 1 / 1.4 of the device
    assert max(errors[-30:]) < 0.05           # and has learnt the device by the end, both terms
    assert abs(end.decode_factor / 1.4 - 1) < 0.05 and abs(end.prefill_factor / 0.8 - 1) < 0.1


def test_main_needs_the_start_model(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"t0": 0.0, "records": _records(START, 10)}))
    assert replay_latency.main([str(old)]) == 2
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"t0": 0.0, "records": _records(START, 30), "start_model": START.to_dict()}))
    assert replay_latency.main([str(new)]) == 0
    out = capsys.readouterr().out
    assert "replayed predictions" in out and "decode 0.0% / 0.0%" in out
