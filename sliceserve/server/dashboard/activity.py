"""What the live dashboard shows that the scheduler keeps no history of: the last iterations (the latency
model's predicted seconds next to the measured ones, and which requests got a token: the decode mask over
time), the last refusals with their reasons, the last finished requests' TTFT/TPOT, and per-class counts.

Everything is a bounded ring buffer filled where the engine already passes: the recorder is an engine observer
(on_step, on_finish on the engine thread) and reads the latency model's prediction for each iteration from
`Scheduler.last_iteration` (made before the model learnt from that iteration, so it does not flatter the
model), and the HTTP layer reports refusals. No clock is read here: times come from the engine's step results
and the caller. Readers (GET /v1/status on the event loop) take a snapshot under a lock.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sliceserve.core.outputs import StepResult
from sliceserve.core.scheduler import Scheduler, is_slo_refusal
from sliceserve.metrics.request_metrics import request_metrics
from sliceserve.request import FinishReason, Request, RequestStatus

ITERATIONS_KEPT = 120
REFUSALS_KEPT = 50
FINISHED_KEPT = 300


@dataclass
class ClassCounts:
    finished: int = 0       # ended with a verdict (stop, length, error, queue timeout)
    met: int = 0
    refused: int = 0        # answered 400/429/503 at admission

    def to_dict(self) -> dict[str, int]:
        return {"finished": self.finished, "met": self.met, "refused": self.refused}


@dataclass
class ActivityRecorder:
    """Engine observer plus refusal log."""

    iterations: deque = field(default_factory=lambda: deque(maxlen=ITERATIONS_KEPT))
    refusals: deque = field(default_factory=lambda: deque(maxlen=REFUSALS_KEPT))
    finished: deque = field(default_factory=lambda: deque(maxlen=FINISHED_KEPT))
    counts: dict[str, ClassCounts] = field(default_factory=dict)
    classes_of: dict[str, str] = field(default_factory=dict)   # req_id -> class, for ids in `iterations`
    num_iterations: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _cls(self, name: str) -> ClassCounts:
        c = self.counts.get(name)
        if c is None:
            c = self.counts[name] = ClassCounts()
        return c

    # --- engine thread ---------------------------------------------------------------------------------
    def on_step(self, step: StepResult, scheduler: Scheduler) -> None:
        sched = step.sched
        if sched.is_empty:
            return   # a pacing pass (nothing ran): no iteration to show
        predicted = scheduler.last_iteration[1] if scheduler.last_iteration is not None else None
        decode = list(sched.decode)
        prefill = list(sched.prefill)
        with self._lock:
            self.num_iterations += 1
            classes_of = self.classes_of
            for rid in (*prefill, *decode):
                if rid not in classes_of:
                    classes_of[rid] = sched.requests[rid].slo_class
            self.iterations.append({
                "n": self.num_iterations, "end_s": step.end_s, "measured_ms": step.output.elapsed_s * 1e3,
                "predicted_ms": None if predicted is None else predicted * 1e3,
                "decode": decode, "prefill": prefill, "prefill_tokens": sum(sched.prefill.values())})
            self._forget_old_ids()


    def _forget_old_ids(self) -> None:
        if len(self.classes_of) <= 4 * ITERATIONS_KEPT:
            return
        live = {rid for it in self.iterations for rid in it["decode"] + it["prefill"]}
        self.classes_of = {rid: c for rid, c in self.classes_of.items() if rid in live}

    def on_finish(self, req: Request) -> None:
        if req.finish_reason is FinishReason.ABORT:
            return   # the client left: no verdict, as the metrics define
        m = request_metrics(req)
        with self._lock:
            c = self._cls(req.slo_class)
            c.finished += 1
            c.met += int(m.met)
            ms = lambda v: None if v is None else v * 1e3  # noqa: E731
            self.finished.append({"req_id": req.req_id, "slo_class": req.slo_class, "ttft_ms": ms(m.ttft_s),
                                  "tpot_ms": ms(m.tpot_s), "e2e_ms": ms(m.e2e_s), "met": m.met,
                                  "reason": req.finish_reason.value if req.finish_reason else None,
                                  "end_s": req.finished_s})
            if is_slo_refusal(req.finish_reason, req.error):   # admitted, then refused by its policy: 429
                self._refusal(req, "slo_infeasible", 429, req.error, req.finished_s)
            elif req.finish_reason is FinishReason.REJECTED:   # admitted, then timed out in the queue: 503
                self._refusal(req, "queue_timeout", 503, req.error or "not scheduled in time", req.finished_s)

    # --- event loop (HTTP layer) -----------------------------------------------------------------------
    def on_reject(self, req: Request, kind: str, status: int, message: str, now_s: float) -> None:
        with self._lock:
            self._refusal(req, kind, status, message, now_s)

    def _refusal(self, req: Request, kind: str, status: int, message: str, at_s: float | None) -> None:
        self._cls(req.slo_class).refused += 1
        self.refusals.append({"req_id": req.req_id, "slo_class": req.slo_class, "kind": kind, "status": status,
                              "message": message, "at_s": at_s})

    # --- readers ---------------------------------------------------------------------------------------
    def snapshot(self, scheduler: Scheduler | None = None) -> dict:
        """JSON-ready copy; with `scheduler`, the per-class running / waiting counts as they stand now."""
        inflight = _inflight(scheduler) if scheduler is not None else {}
        with self._lock:
            for name in inflight:
                self._cls(name)
            counts = {name: {**c.to_dict(), **inflight.get(name, {"running": 0, "waiting": 0})}
                      for name, c in sorted(self.counts.items())}
            iterations = [dict(it) for it in self.iterations]
            ids = {rid for it in iterations for rid in it["decode"] + it["prefill"]}
            return {
                "num_iterations": self.num_iterations,
                "iterations": iterations,
                "request_classes": {rid: self.classes_of[rid] for rid in ids if rid in self.classes_of},
                "refusals": list(self.refusals),
                "finished": list(self.finished),
                "counts": counts,
            }


def _inflight(scheduler: Scheduler) -> dict[str, dict[str, int]]:
    """Per class: running, and waiting (queued without KV, or paused holding it). Read off the engine
    thread: the list copies are atomic in CPython, and a count one step stale is fine for a display (the
    scheduler's own num_running is read the same way by /v1/status). Costs the engine nothing per step."""
    out: dict[str, dict[str, int]] = {}
    for r in list(scheduler.running):
        c = out.setdefault(r.slo_class, {"running": 0, "waiting": 0})
        c["running" if r.status is RequestStatus.RUNNING else "waiting"] += 1
    for r in list(scheduler.waiting):
        out.setdefault(r.slo_class, {"running": 0, "waiting": 0})["waiting"] += 1
    return out
