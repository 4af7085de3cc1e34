"""SLICE's dynamic iterative control (SLICE.md "Dynamic iterative control").

- Drift: the measured time of the last full cycle (sum of the last C iteration times) exceeding
  P * (1 + tolerance) asks for a rebuild; by then the base scheduler's EWMA has moved the latency model,
  so the new selection fits the device as it is now.
- Lag: a selected request whose achieved TPOT over its last `window` tokens exceeds its SLO gets one
  more decode step per cycle at the next rebuild (up to doubling its demand).
- Catch-up: the SLO is on the *mean* TPOT from first to last token, so a request that was paused can
  still meet it by running faster for the rest of its life; `required_rate` computes that rate (and the
  rate an e2e deadline needs), or None when no rate within `max_factor` x its demand can save it.
- Violation risk: each request predicted to miss (lagging, hopeless, TTFT unreachable, or dropped from
  the selection while it still had a TPOT SLO) is counted once.
"""
from __future__ import annotations

import logging
import math
from collections import deque

from sliceserve.request import Request
from sliceserve.slo import FLOAT_SLACK_S

log = logging.getLogger(__name__)


def rate_for(tokens: int, seconds: float, cap_s: float) -> int:
    """Steps per cycle of `cap_s` seconds that produce `tokens` tokens within `seconds`."""
    return max(1, math.ceil(cap_s * tokens / seconds - 1e-9))


class SliceFeedback:
    def __init__(self, period_s: float, tolerance: float = 0.1, window: int = 8, max_factor: int = 2) -> None:
        self.period_s = period_s
        self.tolerance = tolerance
        self.window = window
        self.max_factor = max_factor
        self.boost: dict[str, int] = {}
        self._recent: deque[float] = deque(maxlen=1)
        self._recent_sum = 0.0
        self._flagged: set[str] = set()
        self.num_risks = 0
        self.num_drifts = 0

    # --- cycle timing --------------------------------------------------------------------------------
    def start_cycle(self, num_columns: int, keep: bool = True) -> None:
        """A new mask of `num_columns` columns. The window keeps its latest iterations: under load
        rebuilds come every few iterations, and a window restarted each time would never fill."""
        self._recent = deque(self._recent if keep else (), maxlen=max(1, num_columns))
        self._recent_sum = sum(self._recent)

    def observe(self, elapsed_s: float) -> bool:
        """Record one iteration; True when the last full cycle ran past P * (1 + tolerance)."""
        if len(self._recent) == self._recent.maxlen:
            self._recent_sum -= self._recent[0]
        self._recent.append(elapsed_s)
        self._recent_sum += elapsed_s
        if len(self._recent) == self._recent.maxlen and self._recent_sum > self.period_s * (1 + self.tolerance):
            self.num_drifts += 1
            self.start_cycle(self._recent.maxlen or 1, keep=False)
            return True
        return False

    # --- per-request rates ---------------------------------------------------------------------------
    def check_lag(self, req: Request, base_rate: int) -> bool:
        """Raise `req`'s boost if its recent TPOT is above its SLO; True if it changed."""
        tpot = req.slo.tpot_s
        times = req.token_times_s
        w = len(times) - 1
        if self.window < w:   # min(), spelled out: called for every member at every cycle's end
            w = self.window
        # FLOAT_SLACK_S: 8 steps of exactly 50 ms can sum a few ulps over 0.4 s.
        if tpot is None or w < 2 or (times[-1] - times[-1 - w]) / w <= tpot + FLOAT_SLACK_S:
            return False
        if times[-1] - times[0] <= tpot * (len(times) - 1) + FLOAT_SLACK_S:
            # Still on or ahead of its mean-TPOT line (the SLO): the slow stretch only spent banked slack.
            # A boost here is kept for the request's life and, with four real-time streams filling the
            # cycle exactly, pushes one of them out (edge-mix rate 3: a 4th stream admitted on banked
            # slack was dropped one cycle later because the 59 ms iteration of its own prefill sat in
            # the others' 8-token window).
            return False
        boost = self.boost.get(req.req_id, 0)
        if boost >= base_rate * (self.max_factor - 1):
            return False
        self.boost[req.req_id] = boost + 1
        self.flag(req, "recent TPOT above SLO")
        return True

    def required_rate(self, req: Request, now: float, base_rate: int, cap_s: float) -> int | None:
        """Decode steps per cycle `req` needs to still meet its TPOT and e2e SLOs if it ran from now on
        at that rate in a cycle of `cap_s` seconds; None when even `max_factor` x its demand is too late."""
        rate = base_rate + self.boost.get(req.req_id, 0) if self.boost else base_rate
        # Request fields read once each, no property calls: asked for every running request at every rebuild.
        slo, max_tokens, n_out = req.slo, req.sampling_params.max_tokens, len(req.output_token_ids)
        remaining = max_tokens - n_out
        if remaining > 0:
            tpot = slo.tpot_s
            if tpot is not None and n_out > 0 and max_tokens > 1:
                allowed = tpot * (max_tokens - 1) - (now - req.token_times_s[0])
                if allowed <= 0:
                    return None
                rate = max(rate, rate_for(remaining, allowed, cap_s))
            if slo.e2e_s is not None:
                allowed = req.arrival_s + slo.e2e_s - now
                if allowed <= 0:
                    return None
                rate = max(rate, rate_for(remaining, allowed, cap_s))
        return rate if rate <= base_rate * self.max_factor else None

    # --- risk accounting -----------------------------------------------------------------------------
    def flag(self, req: Request, why: str) -> bool:
        """Count a predicted SLO miss once per request; True the first time."""
        if req.req_id in self._flagged:
            return False
        self._flagged.add(req.req_id)
        self.num_risks += 1
        log.debug("slo violation risk: %s (%s): %s", req.req_id, req.slo_class, why)
        return True

    def forget(self, req_id: str) -> None:
        self.boost.pop(req_id, None)
        self._flagged.discard(req_id)
