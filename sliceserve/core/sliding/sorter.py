"""SlidingServe's multi-level priority sorter: a lexicographic key per request.

    (risk level, slack to the next deadline, remaining work, arrival)

- risk level: 0 = at risk (its next deadline can still be met, but only just: slack < (1 + risk_factor) *
  the predicted time of the work gating it), 1 = safe or no SLO, 2 = hopeless (even running it alone now
  misses the deadline). The paper names only "SLO at risk?"; relegating the hopeless behind everything
  else is our choice (`sliding_relegate_missed`), made because deadline-first ordering otherwise spends
  the device on requests that are lost anyway and drags the next ones past their deadlines too.
- slack: seconds to the next deadline. Before the first token that is the TTFT deadline (or, without a
  TTFT SLO, the e2e deadline); after it, the next token's TPOT deadline first_token + n_out * tpot (or the
  e2e deadline). No bound: +inf.
- remaining work: prompt tokens still to compute plus output tokens that may still come (max_tokens);
  shortest first, as in SJF, so short jobs clear the queue.
- arrival: FCFS among equals.
Smaller keys run first.
"""
from __future__ import annotations

import math

import numpy as np

from sliceserve.request import Request

AT_RISK, SAFE, HOPELESS = 0, 1, 2


def next_deadline_s(req: Request) -> float:
    """Absolute time of the request's next SLO deadline; +inf when it has none."""
    slo = req.slo
    if not req.token_times_s:
        if slo.ttft_s is not None:
            return req.ttft_deadline_s
    elif slo.tpot_s is not None:
        return req.token_times_s[0] + len(req.token_times_s) * slo.tpot_s
    if slo.e2e_s is not None:
        return req.arrival_s + slo.e2e_s
    return math.inf


def remaining_work(req: Request) -> int:
    return req.num_uncomputed_tokens + req.remaining_output_tokens


def risk_level(slack_s: float, need_s: float, risk_factor: float, relegate_missed: bool) -> int:
    """`need_s`: predicted seconds of the work that must finish before the deadline."""
    if math.isinf(slack_s):
        return SAFE
    if slack_s < need_s:
        return HOPELESS if relegate_missed else AT_RISK
    return AT_RISK if slack_s < (1.0 + risk_factor) * need_s else SAFE


def priority_key(req: Request, now: float, need_s: float, risk_factor: float,
                 relegate_missed: bool) -> tuple[int, float, int, float]:
    slack = next_deadline_s(req) - now
    return (risk_level(slack, need_s, risk_factor, relegate_missed), slack, remaining_work(req), req.arrival_s)


def rank(slack_s: np.ndarray, need_s: np.ndarray, work: np.ndarray, arrival_s: np.ndarray,
         risk_factor: float, relegate_missed: bool) -> np.ndarray:
    """Indices in `priority_key` order, for many requests at once (the waiting queue can be long)."""
    slack_s = np.asarray(slack_s, dtype=float)
    need_s = np.asarray(need_s, dtype=float)
    finite = np.isfinite(slack_s)
    level = np.full(len(slack_s), SAFE)
    level[finite & (slack_s < (1.0 + risk_factor) * need_s)] = AT_RISK
    level[finite & (slack_s < need_s)] = HOPELESS if relegate_missed else AT_RISK
    # np.lexsort sorts by the last key first.
    return np.lexsort((np.asarray(arrival_s, dtype=float), np.asarray(work), slack_s, level))
