"""SLORequestRouter's glue to Serve, without a cluster: stats parsing, routed-since-snapshot, completion."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.serve.request_router")

from sliceserve.core.latency import LatencyModel  # noqa: E402
from sliceserve.integrations.ray.asgi import ForwardedRequest  # noqa: E402
from sliceserve.integrations.ray.router import SLORequestRouter  # noqa: E402
from sliceserve.integrations.ray.routing import ReplicaLoad, RequestHint, WorkItem  # noqa: E402
from sliceserve.slo import SLO, SLOClass  # noqa: E402

LAT = LatencyModel([0.05 + 0.01 * i for i in range(16)], prefill_base_s=0.01, prefill_per_token_s=1e-4)
CLASSES = {"interactive": SLOClass("interactive", SLO(ttft_s=2.0, tpot_s=0.2), 1.0)}


@dataclass
class FakeReplica:
    replica_id: str
    routing_stats: dict = field(default_factory=dict)


def _stats(n_running: int, taken_at: float) -> dict:
    work = [WorkItem(1.0, None, 0, True) for _ in range(n_running)]
    return {"load": ReplicaLoad(taken_at, LAT.copy(), 16, 512, "slice", work, classes=CLASSES).to_dict()}


def _pending(i: int) -> SimpleNamespace:
    fwd = ForwardedRequest("POST", "/v1/completions", hint=RequestHint("interactive", prompt_tokens=20))
    return SimpleNamespace(args=[fwd], metadata=SimpleNamespace(internal_request_id=f"r{i}"),
                           routing_context=SimpleNamespace(should_backoff=False))


def _router() -> SLORequestRouter:
    router = SLORequestRouter.__new__(SLORequestRouter)   # Serve's constructor needs a live deployment
    router.initialize_state()
    return router


def test_routes_by_snapshot_then_spreads_a_burst_and_forgets_completed_requests():
    router = _router()
    now = time.time()
    a, b = FakeReplica("a", _stats(1, now)), FakeReplica("b", _stats(4, now))
    choose = lambda i: asyncio.run(router.choose_replicas([a, b], _pending(i)))  # noqa: E731
    assert [r[0].replica_id for r in choose(0)] == ["a", "b"]
    # Four requests sent to a since its snapshot: it now holds 5 to b's 4.
    for i in range(4):
        router.on_request_routed(_pending(i), "a", None)
    assert choose(9)[0][0].replica_id == "b"
    for i in range(4):
        router.on_request_completed("a", f"r{i}")
    assert choose(9)[0][0].replica_id == "a"


def test_requests_routed_before_the_snapshot_are_not_counted_twice():
    router = _router()
    for i in range(6):
        router.on_request_routed(_pending(i), "a", None)
    later = time.time() + 1.0   # a snapshot taken after those were routed already includes them
    a, b = FakeReplica("a", _stats(2, later)), FakeReplica("b", _stats(3, later))
    assert asyncio.run(router.choose_replicas([a, b], _pending(7)))[0][0].replica_id == "a"


def test_unreadable_or_missing_stats_fall_back_to_least_in_flight():
    router = _router()
    a, b = FakeReplica("a", {"load": {"bogus": 1}}), FakeReplica("b", {})
    router.on_request_routed(_pending(0), "a", None)
    assert [r[0].replica_id for r in asyncio.run(router.choose_replicas([a, b], _pending(1)))] == ["b", "a"]
