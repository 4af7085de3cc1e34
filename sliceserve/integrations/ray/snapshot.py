"""A replica's load as the router needs it, read from its live scheduler (no Ray needed).

Called on the replica's event loop while the engine thread mutates the scheduler: the queues are copied
first (`list(...)` of a list is atomic under the GIL) and only read after, so a snapshot may be one
iteration old but is never torn.
"""
from __future__ import annotations

import time

from sliceserve.integrations.ray.routing import ReplicaLoad, WorkItem
from sliceserve.server.state import ServingState


def snapshot(state: ServingState) -> ReplicaLoad:
    engine = state.engine
    sched = engine.core.scheduler
    waiting, running = list(sched.waiting), list(sched.running)
    work = [WorkItem(r.utility, r.slo.tpot_s, r.num_uncomputed_tokens, False) for r in waiting]
    work += [WorkItem(r.utility, r.slo.tpot_s, 0, True) for r in running]
    n = max(1, len(running))
    return ReplicaLoad(
        taken_at=time.time(), latency=sched.latency.copy(), max_num_seqs=sched.config.max_num_seqs,
        max_num_batched_tokens=sched.config.max_num_batched_tokens, policy=state.settings.policy, work=work,
        running_ctx_mean=sum(r.num_tokens for r in running) / n,
        running_remaining_mean=sum(max(0, r.remaining_output_tokens) for r in running) / n,
        classes=dict(state.classes), ready=engine.is_alive and engine.fatal is None)
