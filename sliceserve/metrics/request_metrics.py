"""Per-request latency metrics and SLO verdicts, computed from a finished `Request`'s token times.

Definitions (SLICE.md, "How success is measured"; vLLM bench's names):
- TTFT = first token time - arrival.   E2E = finish time - arrival.
- TPOT = (E2E - TTFT) / (n_out - 1), the mean gap from the first to the last token; None with < 2 tokens.
- ITL  = every gap between consecutive tokens.
- A request *completed* if it ended by STOP or LENGTH. Only completed requests can meet an SLO: rejected,
  aborted, errored and unfinished ones miss every bound, and their latencies are left out of the
  latency statistics (as vLLM bench leaves out failed requests).
- With exactly one output token there is no inter-token gap to violate, so a completed one-token request
  meets its TPOT bound (and TPOT is None). An unset bound is always met.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sliceserve.request import FinishReason, Request
from sliceserve.slo import FLOAT_SLACK_S

COMPLETED = (FinishReason.STOP, FinishReason.LENGTH)


@dataclass(slots=True)
class RequestMetrics:
    req_id: str
    slo_class: str
    utility: float
    arrival_s: float
    finish_reason: str | None        # FinishReason value, None while unfinished
    num_prompt_tokens: int
    num_output_tokens: int
    num_preemptions: int
    completed: bool
    finished_s: float | None = None  # when it ended, whichever way (None while unfinished)
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    itls_s: list[float] = field(default_factory=list)
    ttft_met: bool = False
    tpot_met: bool = False
    e2e_met: bool = False

    @property
    def met(self) -> bool:
        """Every SLO bound met (and the request completed)."""
        return self.completed and self.ttft_met and self.tpot_met and self.e2e_met

    def to_record(self) -> dict:
        """JSON-ready summary of this request (ITLs folded into their maximum to keep files small)."""
        return {
            "req_id": self.req_id, "slo_class": self.slo_class, "arrival_s": self.arrival_s,
            "finish_reason": self.finish_reason, "num_prompt_tokens": self.num_prompt_tokens,
            "num_output_tokens": self.num_output_tokens, "num_preemptions": self.num_preemptions,
            "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s,
            "max_itl_s": max(self.itls_s) if self.itls_s else None,
            "ttft_met": self.ttft_met, "tpot_met": self.tpot_met, "e2e_met": self.e2e_met, "met": self.met,
        }


def _within(value: float | None, bound: float | None) -> bool:
    return bound is None or (value is not None and bool(value <= bound + FLOAT_SLACK_S))


def request_metrics(req: Request) -> RequestMetrics:
    reason = req.finish_reason
    completed = req.status.is_finished and reason in COMPLETED and bool(req.token_times_s)
    m = RequestMetrics(
        req_id=req.req_id, slo_class=req.slo_class, utility=req.utility, arrival_s=req.arrival_s,
        finish_reason=reason.value if reason is not None else None,
        num_prompt_tokens=req.num_prompt_tokens, num_output_tokens=req.num_output_tokens,
        num_preemptions=req.num_preemptions, completed=completed, finished_s=req.finished_s,
    )
    if not completed:
        return m
    times = req.token_times_s
    m.ttft_s = times[0] - req.arrival_s
    end = req.finished_s if req.finished_s is not None else times[-1]
    m.e2e_s = end - req.arrival_s
    if len(times) >= 2:
        # The last token's time, not `end`: TPOT measures generation, whatever bookkeeping follows it.
        m.tpot_s = (times[-1] - times[0]) / (len(times) - 1)
        m.itls_s = [b - a for a, b in zip(times, times[1:])]
    slo = req.slo
    m.ttft_met = _within(m.ttft_s, slo.ttft_s)
    m.tpot_met = slo.tpot_s is None or len(times) < 2 or _within(m.tpot_s, slo.tpot_s)
    m.e2e_met = _within(m.e2e_s, slo.e2e_s)
    return m
