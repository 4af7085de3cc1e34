"""SLO-aware replica choice: predict each replica's TTFT/TPOT for one request from its load, rank replicas.

Pure Python (no Ray, no clock): the Ray request router (router.py) feeds it the load snapshots the replicas
report (`ReplicaLoad`, from `snapshot()` on each replica) plus the requests it routed since each snapshot
was taken, and gets back the replicas in order of preference.

The prediction is the admission estimate of sliceserve/server/admission.py, done on a snapshot instead of
a live scheduler: the prompt waits for the queued prefill ahead of it (chunked into
`max_num_batched_tokens` iterations, each also running the current decodes), then decodes in a batch of
everything that will be running by then. Policies that order by utility (SLICE) put a real-time request
ahead of the lower-utility work queued there, so for them only work of equal or higher utility counts
as "ahead"; for FCFS policies all of it does.

Real-time requests are placed first in a second sense too: a lower-utility request is not sent to a
replica where joining its batch would push a higher-utility request past its TPOT bound, while another
replica can take it without that harm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable, Mapping, Sequence

from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import policy_class
from sliceserve.slo import SLO, SLOClass


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One unfinished request as the router sees it: value, tightest per-token bound, prompt still to feed."""

    utility: float
    tpot_s: float | None
    prefill_tokens: int        # uncomputed prompt tokens (0 once running)
    running: bool


@dataclass(slots=True)
class ReplicaLoad:
    """What a replica reports about itself (`snapshot()` in deployment.py), as plain data."""

    taken_at: float                     # the replica's wall clock (time.time()) when taken
    latency: LatencyModel
    max_num_seqs: int
    max_num_batched_tokens: int
    policy: str = "slice"
    work: list[WorkItem] = field(default_factory=list)
    running_ctx_mean: float = 0.0       # mean tokens in context of the running requests
    running_remaining_mean: float = 0.0  # mean output tokens the running requests may still produce
    classes: dict[str, SLOClass] = field(default_factory=dict)
    ready: bool = True

    @property
    def num_running(self) -> int:
        return sum(1 for w in self.work if w.running)

    @property
    def num_unfinished(self) -> int:
        return len(self.work)

    def to_dict(self) -> dict:
        return {"taken_at": self.taken_at, "latency": self.latency.to_dict(), "max_num_seqs": self.max_num_seqs,
                "max_num_batched_tokens": self.max_num_batched_tokens, "policy": self.policy,
                "work": [[w.utility, w.tpot_s, w.prefill_tokens, w.running] for w in self.work],
                "running_ctx_mean": self.running_ctx_mean, "running_remaining_mean": self.running_remaining_mean,
                "classes": {n: [c.slo.ttft_s, c.slo.tpot_s, c.slo.e2e_s, c.utility] for n, c in self.classes.items()},
                "ready": self.ready}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ReplicaLoad":
        classes = {n: SLOClass(n, SLO(*v[:3]), v[3]) for n, v in d.get("classes", {}).items()}
        work = [WorkItem(float(u), t, int(p), bool(r)) for u, t, p, r in d.get("work", [])]
        return cls(float(d["taken_at"]), LatencyModel.from_dict(d["latency"]), int(d["max_num_seqs"]),
                   int(d["max_num_batched_tokens"]), d.get("policy", "slice"), work,
                   float(d.get("running_ctx_mean", 0.0)), float(d.get("running_remaining_mean", 0.0)),
                   classes, bool(d.get("ready", True)))


@dataclass(frozen=True, slots=True)
class RequestHint:
    """What the router knows of a request before a replica parses it (see hints.py)."""

    slo_class: str | None = None
    slo: SLO = field(default_factory=SLO)     # explicit bounds from the body / headers (override the class)
    utility: float | None = None
    prompt_tokens: int = 1
    max_tokens: int = 16

    def resolve(self, classes: Mapping[str, SLOClass]) -> tuple[SLO, float]:
        """(SLO, utility) as the replica will resolve them: class defaults, overridden per bound."""
        cls = classes.get(self.slo_class) if self.slo_class else None
        slo = (cls.slo if cls else SLO()).merged(self.slo)
        utility = self.utility if self.utility is not None else (cls.utility if cls else 1.0)
        return slo, utility

    def as_work(self, classes: Mapping[str, SLOClass]) -> WorkItem:
        slo, utility = self.resolve(classes)
        return WorkItem(utility, slo.tpot_s, self.prompt_tokens, False)


@dataclass(frozen=True, slots=True)
class Prediction:
    ttft_s: float
    tpot_s: float
    e2e_s: float
    risk: float           # max over the set bounds of predicted / bound; <= 1 means predicted to meet
    harm: bool            # joining would push a higher-utility request past its TPOT bound
    load: int             # unfinished requests including the ones routed since the snapshot


def predict(load: ReplicaLoad, pending: Sequence[WorkItem], hint: RequestHint,
            classes: Mapping[str, SLOClass] | None = None) -> Prediction:
    """Predicted latencies of `hint` on a replica with `load` plus `pending` (routed, not yet in the snapshot)."""
    classes = load.classes if classes is None else classes
    slo, utility = hint.resolve(classes)
    lat, work = load.latency, [*load.work, *pending]
    by_priority = policy_class(load.policy).orders_by_utility   # the policy declares it (core/policies/interface.py)
    ahead = [w for w in work if not w.running and (not by_priority or w.utility >= utility)]
    n_running = sum(1 for w in work if w.running)
    ahead_tokens = sum(w.prefill_tokens for w in ahead) + hint.prompt_tokens
    ctx = (load.running_ctx_mean * n_running + hint.prompt_tokens) / (n_running + 1)
    k = min(len(work) + 1, load.max_num_seqs)            # the batch it decodes in once everything ahead runs
    step = lat.decode_time(k, ctx)
    chunks = math.ceil(ahead_tokens / load.max_num_batched_tokens)
    ttft = lat.prefill_time(ahead_tokens) + chunks * lat.decode_time(n_running, ctx)
    # Every slot taken: it waits for running requests to finish (about their mean remaining output).
    overflow = n_running + len(ahead) + 1 - load.max_num_seqs
    if overflow > 0:
        ttft += math.ceil(overflow / load.max_num_seqs) * load.running_remaining_mean * step
    e2e = ttft + step * max(0, hint.max_tokens - 1)
    ratios = [pred / bound for pred, bound in ((ttft, slo.ttft_s), (step, slo.tpot_s), (e2e, slo.e2e_s))
              if bound is not None]
    risk = max(ratios) if ratios else 0.0
    harm = any(w.utility > utility and w.tpot_s is not None and step > w.tpot_s >= lat.decode_time(k - 1, ctx)
               for w in work)
    return Prediction(ttft, step, e2e, risk, harm, len(work))


def rank(loads: Mapping[Hashable, ReplicaLoad | None], pending: Mapping[Hashable, Sequence[WorkItem]],
         in_flight: Mapping[Hashable, int], hint: RequestHint) -> list[Hashable]:
    """Replica ids, most preferred first.

    Replicas predicted to meet the request's SLO without harming higher-utility work come first, lowest
    risk first (most likely to meet it); then those that meet it only by harming, then the rest, each
    least loaded first. Replicas without a snapshot yet (just started) rank by load alone among the
    last group. A request without an SLO simply goes to the least loaded replica.
    """
    classes: Mapping[str, SLOClass] = next((ld.classes for ld in loads.values() if ld is not None), {})
    keyed = []
    for rid, ld in loads.items():
        flight = in_flight.get(rid, 0)
        if ld is None or not ld.ready:
            keyed.append(((3, 0.0, flight), rid))
            continue
        p = predict(ld, pending.get(rid, ()), hint, classes)
        load = max(p.load, flight)
        if p.risk == 0.0:                       # no SLO: least loaded
            keyed.append(((2, 0.0, load), rid))
        elif p.risk <= 1.0:
            keyed.append(((0 if not p.harm else 1, p.risk, load), rid))
        else:
            keyed.append(((2, 0.0, load), rid))
    keyed.sort(key=lambda kv: kv[0])
    return [rid for _, rid in keyed]
