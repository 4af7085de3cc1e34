"""Prefill order under SLICE on a device where prompts are expensive (a CPU: ~4 ms per prompt token, so one
prompt is several decode steps). Two rules of the per-iteration guard (`SliceScheduler._fill`):
- prompts are not fused into one iteration when that would make an earlier prompt's first token late;
- a member's prefill answers only to the TPOT lines of members ranked above it, so a real-time newcomer is
  not chunked down to the slack of lower-density members.
"""
from __future__ import annotations

from sliceserve.core.latency import LatencyModel
from tests.slice.conftest import make_req, make_slice
from tests.slice.test_policy import run, tpot


def cpu_like() -> LatencyModel:
    """Measured shape of the embedded model on this project's CPU (docs/results/engine-fidelity.md)."""
    return LatencyModel([0.063 + 0.0063 * k for k in range(16)], ctx_coef_s=15e-6, prefill_base_s=0.051,
                        prefill_per_token_s=0.004, name="cpu-like")


def test_two_prompts_are_served_one_after_another_when_fusing_would_make_the_first_late():
    lat = cpu_like()
    # A 3 s period lets both prompts be selected (b's TTFT allows it to wait for a's prompt).
    a = make_req("a", arrival=0.0, prompt=200, max_tokens=8, ttft=1.2, tpot=0.3)
    b = make_req("b", arrival=0.0, prompt=200, max_tokens=8, ttft=2.5, tpot=0.3)
    # Premise: one iteration holding both prompts ends after a's TTFT; a alone ends well before it.
    assert lat.prefill_time(400) > 1.2 > lat.prefill_time(200) + lat.decode_time(1)
    run(make_slice(lat.copy(), slice_period_s=3.0), [a, b], lat)
    assert a.ttft_s <= 1.2, a.ttft_s
    assert b.ttft_s <= 2.5, b.ttft_s
    assert a.num_output_tokens == b.num_output_tokens == 8


def test_real_time_prompt_is_not_chunked_to_a_lower_density_members_slack():
    lat = cpu_like()
    # A lower-utility stream has just started (a few tokens ahead of its TPOT line, so its slack is a few
    # hundred ms); the cycle's spare time lets the selection keep it beside the real-time newcomer. Chunks
    # that kept it on its line would stretch the newcomer's 200-token prompt over several iterations.
    slow = make_req("slow", arrival=1.9, prompt=16, max_tokens=100, ttft=2.0, tpot=0.2, utility=1.0, cls="nrt")
    rt = make_req("rt", arrival=2.1, prompt=200, max_tokens=10, ttft=1.2, tpot=0.3)
    # Premise: the whole prompt in one iteration beside slow's decode fits the TTFT with room to spare.
    assert lat.decode_time(2) + lat.prefill_time(200) < 0.95
    run(make_slice(lat.copy()), [slow, rt], lat)
    assert rt.ttft_s <= 1.2, rt.ttft_s          # chunked to slow's slack it came at 1.64 s
    assert slow.num_output_tokens == 100 and rt.num_output_tokens == 10
    assert tpot(slow) <= 0.2                     # slow still meets its (mean) TPOT
