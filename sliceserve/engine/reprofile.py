"""Re-profiling a drifted latency term in the engine's idle gaps (sliceserve.core.latency_drift decides when).

The engine thread asks `due(now)` on each idle pass (no running or waiting request) and calls `run(now)` when
it says so (a term whose residual stays biased under load, or whose online factor has moved away from its
last measured level once the engine has been idle a while: sliceserve.core.latency_drift): a few shapes are
timed on the executor with synthetic requests whose KV blocks come from the scheduler's own allocator (free
blocks only), and the drifted term's scale is replaced by what they measure. Kept short (one to two seconds
on the 2-vCPU CPU: a request arriving meanwhile waits that long once): decode at batch 1 and 4 over two
contexts, prefill of one chunk of the reference length (256 tokens, `SHAPE_REFERENCE_TOKENS`), each the
median of two timings after an untimed warm-up.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from sliceserve.core.latency import SHAPE_REFERENCE_TOKENS
from sliceserve.core.latency_drift import DriftDetector, rebase_term
from sliceserve.core.scheduler import Scheduler
from sliceserve.executor_api import Executor
from sliceserve.model.profiler import ProfileGrid, measure

log = logging.getLogger(__name__)

# What each term's re-profile times; every grid needs a decode point, so the prefill grid's are tiny. One
# untimed warm-up per shape: after an idle gap the first run of a shape is cold (live, load ~2: a 64-token
# prompt 160 ms where a warm one takes 104-126 ms, a batch-1 decode 34 ms for 23), and the median of two
# timings is their mean, so without it the re-profile rebased prefill 1.4x above a fresh idle profile.
# Prefill is timed at the reference chunk, the one its online factor prices (`LatencyModel.prefill_shape`): the
# form learnt under load is kept through a re-profile, and scaling it by short prompts extrapolated the idle
# device through the loaded form. Live run 14 (docs/results/live-fidelity.md): chunks of 64 and 128 tokens at
# 1.05 and 1.00x the start-up profile, through the form the server ended with (its level part at 0.61), rebase
# p(256) to 1.08x that profile's; on llama.cpp (run 4), whose profile prices prompts per token alone, they
# rebased p(256) to 1.19x the server's start-up profile, 1.42x a fresh idle one. One chunk of 256 costs about
# what the two did (torch, int8: 0.90 s against 0.72 s for the whole re-profile).
GRIDS = {"decode": ProfileGrid((1, 4), (64, 256), (16,), repeats=2, warmup=1),
         "prefill": ProfileGrid((1,), (16, 32), (SHAPE_REFERENCE_TOKENS,), repeats=2, warmup=1)}


class IdleReprofiler:
    def __init__(self, detector: DriftDetector, executor: Executor, scheduler: Scheduler, vocab_size: int,
                 on_reprofile: Callable[[str], None] | None = None) -> None:
        self.detector = detector
        self.executor = executor
        self.scheduler = scheduler
        self.vocab_size = vocab_size
        self.on_reprofile = on_reprofile

    def due(self, now: float) -> bool:
        """Whether to re-profile now: called by the engine when it has nothing to run."""
        if self.scheduler.has_unfinished():
            return False
        self.detector.idle(now)
        lat = self.scheduler.latency
        self.detector.settled({"decode": lat.decode_factor, "prefill": lat.prefill_factor}, now)
        return self.detector.due(now) is not None

    def run(self, now: float) -> None:
        term = self.detector.due(now)
        if term is None or self.scheduler.has_unfinished():
            return
        lat, kv = self.scheduler.latency, self.scheduler.kv
        event: dict[str, Any] = {"before_ms": _reading_ms(lat, term)}
        try:
            samples, _ = measure(self.executor, GRIDS[term], num_kv_blocks=kv.num_free_blocks,
                                 block_size=kv.block_size, max_model_len=self.scheduler.config.max_model_len,
                                 vocab_size=self.vocab_size, progress=False, allocator=kv)
            event["change"] = rebase_term(lat, term, samples)
            event["after_ms"] = _reading_ms(lat, term)
            event["shapes"] = [[s.num_decode, round(s.decode_ctx), s.prefill_tokens, s.seconds * 1e3] for s in samples]
        except Exception as exc:  # noqa: BLE001 - a failed re-profile leaves the model as it was; serving goes on
            log.exception("latency re-profile of %s failed", term)
            event["error"] = f"{type(exc).__name__}: {exc}"
        self.detector.reprofiled(term, now, event)
        log.info("latency model: %s re-profiled in an idle gap: %s", term, event)
        if self.on_reprofile is not None:
            self.on_reprofile(term)


def _reading_ms(lat: Any, term: str) -> float:
    """The figure a re-profile event shows before and after: l(1) for decode, p(256), the chunk it times, for prefill."""
    return (lat.decode_time(1) if term == "decode" else lat.prefill_time(SHAPE_REFERENCE_TOKENS)) * 1e3


def attach(engine: Any, audit: Any, loaded: Any, detector: DriftDetector | None = None) -> IdleReprofiler:
    """Watch `audit`'s residuals (sliceserve.metrics.latency_audit) and re-profile on `loaded`'s executor in
    `engine`'s idle gaps (sliceserve.engine.async_engine.AsyncEngine.idle_work)."""
    from sliceserve.model.profiler import profiling_executor, vocab_size

    audit.drift = detector or DriftDetector()
    engine.idle_work = IdleReprofiler(audit.drift, profiling_executor(loaded), engine.core.scheduler,
                                      vocab_size(loaded), audit.reprofiled)
    return engine.idle_work
