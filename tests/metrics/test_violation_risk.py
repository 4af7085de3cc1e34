"""`sliceserve:slo_violation_risk`: a request still without its first token is at risk once past its TTFT
deadline (`Request.ttft_deadline_s`), not before; one without a TTFT bound never is on that count."""
from __future__ import annotations

import pytest

from sliceserve.metrics.prometheus import violation_risk
from sliceserve.slo import SLO
from tests.core.schedhelpers import make_request, scheduler


@pytest.mark.parametrize("now, late", [(1.4, 0), (1.6, 1), (2.6, 2)])
def test_waiting_requests_are_at_risk_past_their_ttft_deadline(now, late):
    sched = scheduler("vllm")
    for rid, arrival, ttft in (("a", 1.0, 0.5), ("b", 2.0, 0.5)):
        assert sched.add_request(make_request(rid, 8, 4, arrival_s=arrival, slo=SLO(ttft_s=ttft)), arrival)
    sched.add_request(make_request("no-ttft", 8, 4, arrival_s=0.0, slo=SLO(tpot_s=10.0)), 0.0)
    # Deadlines 1.5 and 2.5; the TPOT-only request has not started, so it is never late here.
    assert violation_risk(sched, now) == pytest.approx(late / 3)
