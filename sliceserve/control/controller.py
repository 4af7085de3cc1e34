"""The closed-loop feedback controller: every N iterations, measure, predict, and turn the scheduler's knobs.

One control cycle (`ControllerConfig.every`, iterations) does, in order:
1. Calibration report: the latency model calibrates itself every iteration, one bounded factor per term
   (`LatencyModel.observe`); the controller records the cycle's median measured / predicted ratio (the
   model's rolling error) and logs a `calibrate` decision when a factor moved by more than
   `calibration_tolerance` since the last one. It no longer rescales the whole model: the median of mostly
   decode iterations had rescaled prefill with it, ratcheting prefill estimates far above measured times.
2. Per class: recent attainment (rolling window of finished requests), percentile targets from the class's
   constraints, and the risk of its in-flight requests (running ones whose TPOT so far is above the bound,
   waiting ones whose TTFT budget is mostly gone). A class is *at risk* when any of these says it will
   miss; each at-risk class logs a structured warning and increments `predicted_misses` (a metric).
3. Knobs, each within configured bounds, moved one step per cycle (hysteresis: back off only after
   `relax_after` healthy cycles):
   - SLICE margin (more headroom for model error), SLICE policy only;
   - rate boosts for at-risk running requests of a protected class, SLICE policy only;
   - admission threshold: arrivals with utility below it are refused while a higher-utility class is at
     risk (shed the least valuable load first), never above `max_shed_utility`;
   - batch cap while measured power exceeds the server's power target (no-op where power cannot be read).
The controller imports no clock: `now` comes from the engine (wall clock or the simulator's virtual one).
"""
from __future__ import annotations

import json
import logging
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Callable

from sliceserve.control.config import ControllerConfig
from sliceserve.control import knobs
from sliceserve.control.latency import LatencyTracker
from sliceserve.control.inflight import inflight_risk, slower_than
from sliceserve.core.scheduler import Scheduler
from sliceserve.request import Request, RequestStatus
from sliceserve.slo import ConstraintSet

log = logging.getLogger("sliceserve.control")


@dataclass
class ClassState:
    at_risk: bool = False
    why: str = ""
    predicted_misses: int = 0
    attainment: float | None = None
    risk: float = 0.0


class Controller:
    def __init__(self, scheduler: Scheduler, config: ControllerConfig | None = None,
                 class_constraints: dict[str, ConstraintSet] | None = None,
                 server_constraints: ConstraintSet | None = None,
                 power_reader: Callable[[], float | None] | None = None,
                 on_predicted_miss: Callable[[str], None] | None = None) -> None:
        self.sched = scheduler
        self.config = (config or ControllerConfig()).validate()
        self.class_constraints = class_constraints or {}
        self.server_constraints = server_constraints or ConstraintSet("server")
        self.power_reader = power_reader
        self.on_predicted_miss = on_predicted_miss
        self.tracker = LatencyTracker(window=self.config.window)
        self.classes: dict[str, ClassState] = {}
        self.decisions: deque[dict] = deque(maxlen=200)
        # Per cycle: (time, {class: (at_risk, recent attainment)}) for status and recovery measurements.
        self.history: deque[tuple[float, dict[str, tuple[bool, float | None]]]] = deque(maxlen=1000)
        self.num_cycles = 0
        self.last_error_ratio: float | None = None   # median measured / predicted over the last cycle
        self._logged_factors = (scheduler.latency.decode_factor, scheduler.latency.prefill_factor)
        if not self.config.calibrate:
            scheduler.latency.calibration_cap = 0.0
        self.shed_below = 0.0                # admission threshold (utility)
        self.num_shed = 0
        self._ratios: list[float] = []
        self._iters = 0
        self._healthy_cycles = 0
        self._tpot_late: set[str] = set()   # classes with a request decoding slower than its TPOT (recent tokens)
        self._base_batch_cap = scheduler.config.max_num_seqs
        self._utilities: dict[str, float] = {}   # class -> utility, learnt from the requests seen
        margin = knobs.get_margin(scheduler)
        # Switched off means the scheduler runs exactly as configured: not even the margin floor applies.
        if self.config.enabled and margin is not None and margin < self.config.margin_min:
            knobs.set_margin(scheduler, self.config.margin_min)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    # --- inputs --------------------------------------------------------------------------------------------
    def admission_error(self, req: Request) -> str | None:
        """Why the controller refuses `req` right now (load shedding), or None."""
        self._utilities[req.slo_class] = req.utility
        if self.enabled and req.utility < self.shed_below:
            self.num_shed += 1
            at_risk = ", ".join(n for n, s in self.classes.items() if s.at_risk)
            return (f"shed by the SLO controller: class {req.slo_class!r} (utility {req.utility:g}) is refused "
                    f"while higher-value classes are at risk ({at_risk}); retry later")
        return None

    def observe_finished(self, req: Request) -> None:
        self._utilities[req.slo_class] = req.utility
        self.tracker.observe(req)

    def on_step(self, sched_out, model_out, now: float) -> None:
        """Called after every engine iteration."""
        if not self.enabled or sched_out.is_empty or model_out.elapsed_s <= 0:
            return
        shape = sched_out.executed_sample(model_out.elapsed_s)
        predicted = self.sched.latency.sample_time(shape)
        if predicted > 0:
            self._ratios.append(model_out.elapsed_s / predicted)
        self._iters += 1
        if self._iters >= self.config.every:
            self.cycle(now)

    # --- the control cycle ---------------------------------------------------------------------------------
    def cycle(self, now: float) -> None:
        self._iters = 0
        self.num_cycles += 1
        if self.config.calibrate:
            self._calibrate(now)
        at_risk = self._assess(now)
        self.history.append((now, {n: (s.at_risk, s.attainment) for n, s in self.classes.items()}))
        self._act(at_risk, now)

    @property
    def calibration_scale(self) -> float:
        """The latency model's online decode factor (measured / profiled decode time)."""
        return self.sched.latency.decode_factor

    def _calibrate(self, now: float) -> None:
        ratios, self._ratios = self._ratios, []
        if len(ratios) >= 4:
            self.last_error_ratio = statistics.median(ratios)
        lat = self.sched.latency
        factors = (lat.decode_factor, lat.prefill_factor)
        tol = self.config.calibration_tolerance
        if all(abs(f / old - 1.0) <= tol for f, old in zip(factors, self._logged_factors)):
            return
        self._logged_factors = factors
        self._decide(now, "calibrate", decode_factor=round(factors[0], 4), prefill_factor=round(factors[1], 4),
                     error_ratio=None if self.last_error_ratio is None else round(self.last_error_ratio, 4),
                     decode_l1_ms=round(lat.decode_time(1) * 1e3, 3),
                     prefill_256_ms=round(lat.prefill_time(256) * 1e3, 3))

    def _assess(self, now: float) -> list[str]:
        cfg = self.config
        inflight, self._tpot_late = inflight_risk(self.sched, now)
        at_risk: list[str] = []
        names = set(self.tracker.classes) | set(inflight) | set(self.class_constraints)
        for name in sorted(names):
            st = self.classes.setdefault(name, ClassState())
            w = self.tracker.classes.get(name)
            st.attainment = w.attainment(cfg.attainment_window) if w is not None and len(w.met) >= cfg.min_class_samples else None
            risky, total = inflight.get(name, (0, 0))
            st.risk = risky / total if total else 0.0
            reasons = []
            if st.attainment is not None and st.attainment < cfg.target_attainment:
                reasons.append(f"recent attainment {st.attainment:.2f} < {cfg.target_attainment:.2f}")
            if total and st.risk > 1.0 - cfg.target_attainment:
                reasons.append(f"{risky}/{total} in-flight requests predicted to miss")
            for c in self.class_constraints.get(name, ()):
                if w is None or len(w.met) < cfg.min_class_samples:
                    continue
                if c.metric == "throughput":   # a batch class's rate over the window, tokens/s
                    measured = w.throughput()
                    if measured is not None and measured < c.bound:
                        reasons.append(f"{c.text}: measured {measured:.1f} tok/s")
                    continue
                if not c.is_statistic:
                    continue
                measured = (self.tracker.mean(name, c.metric) if c.mean
                            else self.tracker.percentile(name, c.metric, c.percentile))
                if measured is not None and measured > c.bound:
                    reasons.append(f"{c.text}: measured {measured * 1e3:.0f} ms")
            st.at_risk, st.why = bool(reasons), "; ".join(reasons)
            if st.at_risk:
                st.predicted_misses += 1
                at_risk.append(name)
                log.warning("slo_at_risk %s", json.dumps({"event": "slo_at_risk", "slo_class": name, "time_s": now,
                                                          "why": st.why, "risk": round(st.risk, 3)}))
                if self.on_predicted_miss is not None:
                    self.on_predicted_miss(name)
        return at_risk

    def _act(self, at_risk: list[str], now: float) -> None:
        cfg = self.config
        # Classes already being shed miss by design: they neither push the knobs further nor block relaxing.
        served = [n for n in at_risk if self._utility(n) >= self.shed_below]
        if not served:
            self._healthy_cycles += 1
            if self._healthy_cycles >= cfg.relax_after:
                self._healthy_cycles = 0
                self._relax(now)
            self._power(now)
            return
        self._healthy_cycles = 0
        top = max(self._utility(n) for n in served)
        margin = knobs.get_margin(self.sched)
        # More cycle headroom only helps the classes the scheduler already protects (the most valuable one):
        # a low-value class missing under overload needs shedding or capacity, not a smaller selection.
        # And only when requests already decoding fall behind their TPOT (the latency model is too
        # optimistic): waiting requests about to miss their TTFT are queueing, and a larger margin would
        # admit fewer of them (under 3x overload on a CPU it climbed to its maximum within a minute).
        tpot_late = any(n in self._tpot_late for n in served if self._utility(n) >= top)
        if margin is not None and margin < cfg.margin_max and top >= max(self._utilities.values(), default=top) \
                and tpot_late:
            new = min(cfg.margin_max, margin + cfg.margin_step)
            knobs.set_margin(self.sched, new)
            self._decide(now, "margin", value=round(new, 3), reason=f"at risk: {', '.join(served)}")
        self._boost_lagging(served, now)
        # Shed the least valuable class still admitted, if it is worth less than one at risk.
        lower = sorted(u for u in set(self._utilities.values())
                       if self.shed_below <= u < min(top, cfg.max_shed_utility))
        if lower:
            self.shed_below = lower[0] * (1 + 1e-9)
            self._decide(now, "admission", shed_below_utility=lower[0], reason=f"at risk: {', '.join(served)}")
        self._power(now)

    def _relax(self, now: float) -> None:
        cfg = self.config
        if self.shed_below > 0:
            self.shed_below = 0.0
            self._decide(now, "admission", shed_below_utility=0.0, reason="healthy")
        margin = knobs.get_margin(self.sched)
        if margin is not None and margin > cfg.margin_min:
            new = max(cfg.margin_min, margin - cfg.margin_step)
            knobs.set_margin(self.sched, new)
            self._decide(now, "margin", value=round(new, 3), reason="healthy")

    def _boost_lagging(self, at_risk: list[str], now: float) -> None:
        boosted = []
        for req in self.sched.running:
            tpot, times = req.slo.tpot_s, req.token_times_s
            if (req.slo_class in at_risk and req.status is RequestStatus.RUNNING and slower_than(times, tpot)
                    and knobs.boost(self.sched, req.req_id, self.config.max_boost)):
                boosted.append(req.req_id)
        if boosted:
            self._decide(now, "boost", requests=boosted[:20], count=len(boosted))

    def _power(self, now: float) -> None:
        target = self.server_constraints.get("power")
        if target is None or self.power_reader is None:
            return   # no target, or a device whose power cannot be read: documented no-op
        watts = self.power_reader()
        if watts is None:
            return
        cap = knobs.get_batch_cap(self.sched)
        if watts > target.bound and cap > self.config.min_batch_cap:
            new = max(self.config.min_batch_cap, cap // 2)
        elif watts < 0.9 * target.bound and cap < self._base_batch_cap:
            new = min(self._base_batch_cap, cap + 1)
        else:
            return
        knobs.set_batch_cap(self.sched, new)
        self._decide(now, "batch_cap", value=new, power_w=round(watts, 2), target_w=target.bound)

    # --- helpers -------------------------------------------------------------------------------------------
    def _utility(self, slo_class: str) -> float:
        return self._utilities.get(slo_class, 1.0)

    def _decide(self, now: float, kind: str, **detail: object) -> None:
        record = {"time_s": round(now, 4), "cycle": self.num_cycles, "kind": kind, **detail}
        self.decisions.append(record)
        log.info("controller_decision %s", json.dumps(record))

    def status(self) -> dict:
        """JSON-ready view for /v1/status."""
        return {
            "enabled": self.enabled, "every_iterations": self.config.every, "cycles": self.num_cycles,
            "calibration_scale": self.calibration_scale,
            "latency_factors": {"decode": self.sched.latency.decode_factor,
                                "prefill": self.sched.latency.prefill_factor},
            "latency_error_ratio": self.last_error_ratio, "slice_margin": knobs.get_margin(self.sched),
            "shed_below_utility": self.shed_below, "num_shed": self.num_shed,
            "batch_cap": knobs.get_batch_cap(self.sched),
            "classes": {n: {"at_risk": s.at_risk, "why": s.why, "predicted_misses": s.predicted_misses,
                            "attainment_recent": s.attainment, "inflight_risk": s.risk}
                        for n, s in sorted(self.classes.items())},
            "decisions": list(self.decisions)[-20:],
        }
