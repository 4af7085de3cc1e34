"""The drift detector and its idle-gap re-profile, on simulated time and a simulated device (no torch).

A term whose residual stays biased is re-measured in the next idle gap, never while requests run, once per
sustained bias; one term's bias never moves the other term's estimate."""
from __future__ import annotations

import pytest

from sliceserve.core.latency import IterationSample, LatencyModel
from sliceserve.core.latency_drift import DriftConfig, DriftDetector, rebase_term
from sliceserve.engine.core import EngineCore
from sliceserve.engine.reprofile import IdleReprofiler
from sliceserve.metrics.latency_audit import iteration_kind
from sliceserve.sim.executor import SimulatedExecutor
from tests.core.schedhelpers import make_request, scheduler


def _cpu_like() -> LatencyModel:
    return LatencyModel([0.055, 0.060, 0.066, 0.070, 0.075, 0.080, 0.085, 0.090], ctx_coef_s=2e-6,
                        prefill_base_s=0.02, prefill_per_token_s=0.004, prefill_quad_s=1e-6)


class _Loop:
    """What AsyncEngine does, on simulated time: steps while anything is admitted, each measured iteration fed
    to the detector (as the audit does); on idle passes every 0.5 s, the re-profile when it is due."""

    def __init__(self, model: LatencyModel, device: LatencyModel, config: DriftConfig) -> None:
        self.sched = scheduler("vllm", model, max_num_seqs=8, num_kv_blocks=512, block_size=16, max_model_len=1024)
        self.device = SimulatedExecutor(device)
        self.core = EngineCore(self.sched, self.device)
        self.detector = DriftDetector(config)
        self.reprofiled: list[tuple[str, float, bool]] = []   # (term, when, anything running then)
        self.reprofiler = IdleReprofiler(self.detector, self.device, self.sched, vocab_size=100,
                                         on_reprofile=lambda term: self.reprofiled.append(
                                             (term, self.now, self.sched.has_unfinished())))
        self.now = 0.0
        self.busy_checks = 0

    def burst(self, n: int, prompt: int = 200, max_tokens: int = 40) -> None:
        for i in range(n):
            self.core.add_request(make_request(f"r{self.now:.3f}-{i}", prompt, max_tokens, self.now), self.now)

    def run_until_idle(self) -> None:
        while self.core.has_unfinished():
            self.busy_checks += self.reprofiler.due(self.now)   # never due while requests are admitted
            self.now += max(self.core.step(self.now).output.elapsed_s, 1e-3)
            last = self.sched.last_iteration
            if last is not None:
                sample, predicted = last
                self.detector.observe(iteration_kind(sample), predicted, sample.seconds, self.now)

    def idle(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            if self.reprofiler.due(self.now):
                self.reprofiler.run(self.now)
            self.now += 0.5


def test_sustained_prefill_bias_reprofiles_once_in_an_idle_gap_and_never_while_busy():
    model = _cpu_like()
    model.calibration_cap = 0.0            # online calibration off: the bias stays until the re-profile
    device = _cpu_like()
    device.prefill_per_token_s *= 2        # prompts take twice what the model says; decode as profiled
    loop = _Loop(model, device, DriftConfig(samples=8, window_s=5.0, min_idle_s=1.0, cooldown_s=60.0))
    l4 = model.decode_time(4, 300.0)
    for _ in range(6):                     # bursts of work long enough for the bias to last the window
        loop.burst(6)
        loop.run_until_idle()
        loop.idle(0.4)                     # gaps shorter than min_idle_s: no re-profile yet
    assert loop.detector.pending == ["prefill"] and not loop.reprofiled
    loop.idle(0.4)
    loop.burst(1)                          # admitted in the gap, not yet run: the gap is over
    assert not loop.reprofiler.due(loop.now + 5.0)
    loop.run_until_idle()
    assert not loop.reprofiled
    loop.idle(2.0)
    assert [(t, busy) for t, _, busy in loop.reprofiled] == [("prefill", False)]
    assert loop.busy_checks == 0
    # The re-profile measured prefill alone on the device: the model now says what the device does.
    assert model.prefill_time(256) == pytest.approx(device.prefill_time(256), rel=0.05)
    assert model.decode_time(4, 300.0) == pytest.approx(l4, rel=1e-9)      # decode untouched
    event = loop.detector.status()["recent"][0]
    assert event["term"] == "prefill" and event["change"] == pytest.approx(2.0, rel=0.1)
    # The bias is gone: more load and more gaps re-profile nothing more.
    for _ in range(3):
        loop.burst(6)
        loop.run_until_idle()
        loop.idle(3.0)
    assert len(loop.reprofiled) == 1 and loop.detector.count == {"decode": 0, "prefill": 1}


def test_decode_slows_2x_and_the_prefill_estimate_stays_through_drift_and_reprofile():
    """The issue's case with the drift detector on: decode 2x slower (and its calibration too slow to follow:
    cap 0), prefill as profiled. The decode term is re-measured; the prefill estimate does not move."""
    model = _cpu_like()
    model.calibration_cap = 0.0
    device = _cpu_like()
    device.decode_table_s = [2 * t for t in device.decode_table_s]
    device.ctx_coef_s *= 2
    loop = _Loop(model, device, DriftConfig(samples=8, window_s=5.0, min_idle_s=1.0, cooldown_s=60.0))
    p256 = model.prefill_time(256)
    for _ in range(8):
        loop.burst(6)
        loop.run_until_idle()
        loop.idle(2.0)
    terms = [t for t, _, _ in loop.reprofiled]
    assert "decode" in terms
    assert model.decode_time(4, 300.0) == pytest.approx(device.decode_time(4, 300.0), rel=0.1)
    assert model.prefill_time(256) == pytest.approx(p256, rel=0.02)


def test_noise_without_bias_reprofiles_nothing():
    det = DriftDetector(DriftConfig(samples=8, window_s=1.0, min_idle_s=0.0))
    for i in range(200):   # +-20% alternating: large errors, median ratio 1
        det.observe("decode", 0.05 * (1.2 if i % 2 else 0.8), 0.05, i * 0.1)
    det.idle(30.0)
    assert det.due(30.0) is None and det.bias("decode") == pytest.approx(0.0, abs=0.2)


def test_a_short_bias_is_not_a_drift_and_busy_resets_the_idle_gap():
    det = DriftDetector(DriftConfig(samples=4, window_s=10.0, min_idle_s=1.0))
    for i in range(20):    # 2 s of a 30% bias, then right again
        det.observe("prefill", 1.3, 1.0, i * 0.1)
    for i in range(20, 200):
        det.observe("mixed", 1.0, 1.0, i * 0.1)
    det.idle(20.0)
    assert det.due(25.0) is None
    for i in range(200, 400):   # a bias lasting 20 s
        det.observe("decode", 0.5, 1.0, i * 0.1)
    assert det.pending == ["decode"]
    det.idle(40.0)
    assert det.due(40.5) is None            # idle only half a second
    det.observe("decode", 0.5, 1.0, 40.6)    # an iteration ran: the gap starts over
    det.idle(41.0)
    assert det.due(41.5) is None and det.due(42.0) == "decode"


def test_rebase_term_replaces_one_term_and_resets_its_factor():
    model = _cpu_like()
    model.prefill_factor, model.decode_factor = 1.5, 0.9
    samples = [IterationSample(0, 0.0, n, 2.0 * (0.02 + 0.004 * n + 1e-6 * n * n)) for n in (64, 128)]
    samples.append(IterationSample(1, 64.0, 0, 10.0))   # a decode sample says nothing about prefill
    change = rebase_term(model, "prefill", samples)
    assert model.prefill_factor == 1.0 and change == pytest.approx(2.0 / 1.5)
    assert model.prefill_time(100) == pytest.approx(2.0 * (0.02 + 0.4 + 1e-2))
    assert model.decode_factor == 0.9 and model.decode_table_s[0] == 0.055
    with pytest.raises(ValueError, match="no decode sample"):
        rebase_term(model, "decode", samples[:2])


def test_a_factor_moved_under_load_is_rechecked_after_a_long_enough_idle_gap():
    """The idle re-check: under load prefill costs 1.4x (the online factor follows it, unbiased, so the residual
    detector has nothing to act on); once the load is gone and the engine has been idle `recheck_idle_s`, the
    term is re-measured and the model says what an idle engine does again; decode, whose factor stayed, is not
    re-measured."""
    model = _cpu_like()
    device = _cpu_like()
    device.prefill_per_token_s *= 1.4      # prompts under load
    config = DriftConfig(threshold=5.0, samples=8, min_idle_s=1.0, cooldown_s=60.0, recheck_factor=0.15,
                         recheck_idle_s=5.0)
    loop = _Loop(model, device, config)
    idle_p256 = _cpu_like().prefill_time(256)
    for _ in range(10):
        loop.burst(6)
        loop.run_until_idle()
        loop.idle(1.0)                     # short gaps between bursts: no re-check
    assert model.prefill_factor > 1.2 and not loop.reprofiled
    assert abs(model.decode_factor - 1.0) < 0.15
    device.prefill_per_token_s /= 1.4      # the load is gone
    loop.idle(4.0)                         # idle 5 s in all only at the next pass
    assert not loop.reprofiled
    loop.idle(3.0)
    assert [t for t, _, _ in loop.reprofiled] == ["prefill"]
    assert model.prefill_factor == 1.0
    assert model.prefill_time(256) == pytest.approx(idle_p256, rel=0.05)
    assert loop.detector.status()["recent"][0]["reason"].startswith("online factor")
    loop.idle(30.0)                        # within the cooldown and the factor back at 1: nothing more
    assert len(loop.reprofiled) == 1


def test_the_idle_recheck_can_be_turned_off_and_rejects_bad_settings():
    det = DriftDetector(DriftConfig(recheck_factor=None))
    det.idle(0.0)
    det.settled({"decode": 3.0, "prefill": 0.3}, 100.0)
    assert det.due(100.0) is None
    det = DriftDetector(DriftConfig(recheck_factor=0.15, recheck_idle_s=5.0, min_idle_s=1.0))
    det.idle(0.0)
    det.settled({"decode": 1.1, "prefill": 0.8}, 6.0)
    assert det.due(6.0) == "prefill" and det.pending == ["prefill"]
    with pytest.raises(ValueError, match="recheck_factor"):
        DriftConfig(recheck_factor=0.0)


def test_the_prefill_reprofile_prices_the_reference_chunk_whatever_form_was_learnt_under_load():
    """Live run 14: the form learnt under load (level part 0.61, per-token 1.08, attention 0.79) is kept through a
    re-profile, so short prompts timed on the idle device were extrapolated to p(256) through it, 8 % above the
    idle device. The re-profile's prefill grid times the reference chunk, the one the online factor prices, so
    after a re-profile p(256) is what the idle device takes, whatever the form."""
    from sliceserve.engine.reprofile import GRIDS

    idle = LatencyModel([0.0112, 0.0122], ctx_coef_s=8.7e-6, prefill_base_s=0.0272, prefill_per_token_s=0.000932,
                        prefill_attn_s=1.08e-6)      # run 14's start-up profile, the device idle
    model = idle.copy()
    model.prefill_shape = [0.606, 1.076, 0.793]
    model.prefill_factor = 1.15                     # under load
    assert model.prefill_time(256) == pytest.approx(1.15 * idle.prefill_time(256), rel=0.01)  # normalised at 256
    grid = GRIDS["prefill"]
    samples = [IterationSample(0, 0.0, n, idle.prefill_time(n)) for n in grid.chunks]
    rebase_term(model, "prefill", samples)
    assert model.prefill_factor == 1.0
    assert model.prefill_time(256) == pytest.approx(idle.prefill_time(256), rel=0.005)
    assert model.prefill_shape == [0.606, 1.076, 0.793]   # the form is kept
