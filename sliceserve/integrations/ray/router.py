"""`SLORequestRouter`: a Ray Serve custom request router (the documented `serve.request_router.RequestRouter`
extension point, Ray >= 2.45) that sends each request to the replica most likely to meet its SLO.

Inputs: the request's `RequestHint` (put in the forwarded request by the ingress), each replica's load
snapshot (the engine deployment's `record_routing_stats`, polled by Serve every
`request_routing_stats_period_s`), and the requests this router sent since that snapshot was taken (so a
burst between two polls is not all sent to the same replica). The ranking itself is routing.rank (pure).

It returns singleton ranks, most preferred first: Serve tries them in order, skipping a replica whose
`max_ongoing_requests` is reached, so a full replica falls back to the next best.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Hashable

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from sliceserve.integrations.ray.asgi import ForwardedRequest
from sliceserve.integrations.ray.routing import ReplicaLoad, RequestHint, WorkItem, rank

log = logging.getLogger(__name__)
# Forget a routed request after this long even if Serve never reported its completion (it will then be in
# the replica's own snapshot anyway).
_ROUTED_TTL_S = 600.0


def _hint_of(pending: PendingRequest | None) -> RequestHint:
    if pending is not None:
        for arg in pending.args:
            if isinstance(arg, ForwardedRequest) and isinstance(arg.hint, RequestHint):
                return arg.hint
    return RequestHint()


class SLORequestRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, **kwargs: Any) -> None:
        # internal request id -> (replica id, what it adds to that replica's load, wall time routed)
        self._routed: dict[str, tuple[ReplicaID, WorkItem, float]] = {}
        self._parsed: dict[ReplicaID, tuple[int, ReplicaLoad | None]] = {}

    def _load_of(self, replica: RunningReplica) -> ReplicaLoad | None:
        stats = replica.routing_stats or {}
        key = id(stats)   # Serve replaces the dict on every poll: parse each one once
        cached = self._parsed.get(replica.replica_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            load = ReplicaLoad.from_dict(stats["load"]) if "load" in stats else None
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("replica %s sent unreadable routing stats: %s", replica.replica_id, exc)
            load = None
        self._parsed[replica.replica_id] = (key, load)
        return load

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True   # all full: back off rather than spin
        now = time.time()
        by_id: dict[Hashable, RunningReplica] = {r.replica_id: r for r in candidate_replicas}
        loads = {rid: self._load_of(r) for rid, r in by_id.items()}
        pending: dict[Hashable, list[WorkItem]] = {rid: [] for rid in by_id}
        in_flight: dict[Hashable, int] = {rid: 0 for rid in by_id}
        for req_id, (rid, item, at) in list(self._routed.items()):
            if now - at > _ROUTED_TTL_S:
                del self._routed[req_id]
                continue
            if rid not in by_id:
                continue
            in_flight[rid] += 1
            ld = loads[rid]
            if ld is None or at > ld.taken_at:
                pending[rid].append(item)
        order = rank(loads, pending, in_flight, _hint_of(pending_request))
        return [[by_id[rid]] for rid in order]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        hint = _hint_of(pending_request)
        classes = next((ld.classes for _, ld in self._parsed.values() if ld is not None), {})
        self._routed[pending_request.metadata.internal_request_id] = (replica_id, hint.as_work(classes), time.time())

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._routed.pop(internal_request_id, None)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._parsed.pop(replica_id, None)
        for req_id in [k for k, (rid, _, _) in self._routed.items() if rid == replica_id]:
            del self._routed[req_id]
