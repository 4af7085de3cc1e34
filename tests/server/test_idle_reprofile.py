"""The drift detector on a live server (tiny model): a latency term whose residual stays biased is re-measured
on the real runner in the next idle gap, reported in /v1/status and /metrics, and serving afterwards is
unchanged (the re-profile's synthetic requests take only free KV blocks: cached prefixes stay intact)."""
from __future__ import annotations

import re
import time

import httpx
import pytest

pytest.importorskip("torch")

from sliceserve.core.latency_drift import DriftConfig, DriftDetector  # noqa: E402
from tests.server.helpers import LiveServer, make_state  # noqa: E402

PROMPT = "A prompt long enough to fill a few KV blocks, repeated for the prefix cache. " * 6


def test_biased_prefill_is_reprofiled_in_an_idle_gap_and_serving_is_unchanged(tiny_loaded_factory):
    state = make_state(tiny_loaded_factory(), policy="slice", idle_reprofile=True,
                       scheduler={"enable_prefix_caching": True})
    lat = state.engine.core.scheduler.latency
    lat.calibration_cap = 0.0                   # online calibration off: only a re-profile removes the bias
    lat.prefill_per_token_s *= 1000             # prompts predicted far slower than the runner runs them
    detector = DriftDetector(DriftConfig(samples=3, window_s=0.0, min_idle_s=0.3, cooldown_s=600))
    state.metrics.latency_audit.drift = state.engine.idle_work.detector = detector
    p128 = lat.prefill_time(128)
    with LiveServer(state) as live:
        client = live.openai()
        first = [client.completions.create(model="tiny", prompt=f"{i} " + PROMPT, max_tokens=4, temperature=0)
                 for i in range(4)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            drift = httpx.get(live.url + "/v1/status", timeout=10).json()["latency_model"]["drift"]
            if drift["reprofiles"]["prefill"]:
                break
            time.sleep(0.2)
        again = client.completions.create(model="tiny", prompt="3 " + PROMPT, max_tokens=4, temperature=0)
        metrics = httpx.get(live.url + "/metrics", timeout=10).text
        cached = live.scheduler.kv.hit_tokens
    assert drift["reprofiles"]["prefill"] == 1, drift
    event = [e for e in drift["recent"] if e["term"] == "prefill"][0]
    assert "error" not in event and event["change"] < 0.5 and lat.prefill_factor == 1.0
    # The model now says what the runner measured in the gap: p(256), the reference chunk it timed, exactly.
    measured_256 = [ms for k, _, n, ms in event["shapes"] if k == 0 and n == 256][0]
    assert lat.prefill_time(256) * 1e3 == pytest.approx(event["after_ms"])
    assert event["after_ms"] == pytest.approx(measured_256, rel=1e-6) and lat.prefill_time(128) < 0.5 * p128
    assert re.search(r'sliceserve:latency_reprofiles_total\{term="prefill"\} 1\.0', metrics)
    # The same prompt after the re-profile: served from the prefix cache, the same greedy tokens.
    assert again.choices[0].text == first[3].choices[0].text and cached > 0


def test_no_idle_reprofile_leaves_the_engine_without_idle_work(tiny_loaded_factory):
    import argparse

    from sliceserve.cli.serve_cmd import _FIELDS, add_parser
    from sliceserve.server.settings import load_settings

    parser = argparse.ArgumentParser()
    add_parser(parser)
    args = parser.parse_args(["--no-idle-reprofile"])
    settings = load_settings({name: getattr(args, name) for name in _FIELDS})
    assert settings.idle_reprofile is False
    assert load_settings({name: getattr(parser.parse_args([]), name) for name in _FIELDS}).idle_reprofile is True
    state = make_state(tiny_loaded_factory(), idle_reprofile=False)
    assert state.engine.idle_work is None and state.metrics.latency_audit.drift is None
