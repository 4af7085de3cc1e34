"""Prometheus exposition with vLLM's metric names (existing dashboards work) plus sliceserve's SLO metrics.

Each server app gets its own CollectorRegistry, so several apps (tests) never collide. Per-request values
come from `request_metrics` (the project's one definition of TTFT / TPOT / met); this module only exports.

sliceserve:slo_violation_risk is the fraction of unfinished requests with an SLO that the latency model
predicts will miss it at the current batch: a running request whose TPOT bound is below the predicted
decode step l(k, ctx), or a waiting one whose TTFT bound has already passed.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sliceserve.core.outputs import StepResult
from sliceserve.core.scheduler import Scheduler
from sliceserve.metrics.latency_audit import LatencyAudit
from sliceserve.metrics.request_metrics import request_metrics
from sliceserve.request import FinishReason, Request

# Buckets follow vLLM's choices for the same metrics (seconds).
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                 20.0, 40.0, 80.0)
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)


class ServerMetrics:
    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.model_name = model_name
        r, lbl = self.registry, ["model_name"]
        self.running = Gauge("vllm:num_requests_running", "Requests in the batch (holding KV, not paused)", lbl, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting or paused", lbl, registry=r)
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc", "KV cache usage (1 = full)", lbl, registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token", lbl,
                              buckets=_TTFT_BUCKETS, registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Gap between consecutive output tokens", lbl,
                             buckets=_ITL_BUCKETS, registry=r)
        # Per request, the quantity an SLO's TPOT bound judges (vLLM exports it under the same name).
        self.tpot = Histogram("vllm:request_time_per_output_token_seconds", "Mean gap between a request's output "
                              "tokens after the first (its TPOT)", lbl, buckets=_ITL_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Arrival to end of request", lbl,
                             buckets=_E2E_BUCKETS, registry=r)
        # prometheus_client appends _total to counters itself.
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens of finished requests", lbl, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens", lbl, registry=r)
        self.finished = Counter("vllm:request_success", "Finished requests by reason", lbl + ["finished_reason"],
                                registry=r)
        self.attainment = Gauge("sliceserve:slo_attainment", "Fraction of finished requests that met their SLO",
                                ["slo_class"], registry=r)
        self.violations = Counter("sliceserve:slo_violations", "SLO bounds missed, by class and metric",
                                  ["slo_class", "metric"], registry=r)
        self.risk = Gauge("sliceserve:slo_violation_risk",
                          "Fraction of unfinished SLO requests predicted to miss their SLO", registry=r)
        self.rejected = Counter("sliceserve:requests_rejected", "Requests refused at admission, by why",
                                ["reason"], registry=r)
        # Prefix cache, in tokens as vLLM counts them (queried prompt tokens, tokens found cached).
        self.prefix_queries = Counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                      lbl, registry=r)
        self.prefix_hits = Counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache", lbl,
                                   registry=r)
        self.prefix_hit_rate = Gauge("sliceserve:prefix_cache_hit_rate", "Prefix cache hits / queries since start",
                                     lbl, registry=r)
        self._prefix_seen = (0, 0)             # allocator totals already exported: (queries, hits)
        self._met: dict[str, list[int]] = {}   # slo_class -> [met, counted]
        self.latency_audit = LatencyAudit(self.registry)

    # --- engine observer (called on the engine thread; prometheus_client is thread-safe) -------------------
    def on_state(self, scheduler: Scheduler) -> None:
        """Queue and KV gauges; the engine calls this after every change (adds, aborts, expiries, steps)."""
        name = self.model_name
        self.running.labels(name).set(scheduler.num_running)
        self.waiting.labels(name).set(scheduler.num_waiting)
        self.kv_usage.labels(name).set(scheduler.kv.usage)

    def on_step(self, step: StepResult, scheduler: Scheduler) -> None:
        name = self.model_name
        self.on_state(scheduler)
        self.generation_tokens.labels(name).inc(len(step.output.sampled))
        self.risk.set(violation_risk(scheduler, step.end_s))
        self._export_prefix_cache(scheduler.kv)
        self.latency_audit.record(scheduler.last_iteration, step.end_s)

    def _export_prefix_cache(self, kv: object) -> None:
        """Counters move by what the allocator counted since the last step (it keeps running totals)."""
        if not hasattr(kv, "lookup_tokens"):
            return   # plain allocator: prefix caching is off
        queries, hits = kv.lookup_tokens, kv.hit_tokens
        seen_q, seen_h = self._prefix_seen
        if queries == seen_q:
            return
        name = self.model_name
        self.prefix_queries.labels(name).inc(queries - seen_q)
        self.prefix_hits.labels(name).inc(hits - seen_h)
        self.prefix_hit_rate.labels(name).set(hits / queries if queries else 0.0)
        self._prefix_seen = (queries, hits)

    def on_finish(self, req: Request) -> None:
        name = self.model_name
        self.finished.labels(name, req.finish_reason.value if req.finish_reason else "unknown").inc()
        self.prompt_tokens.labels(name).inc(req.num_prompt_tokens)
        if req.finish_reason is FinishReason.ABORT:
            return   # the client left: neither a latency sample nor an SLO verdict
        m = request_metrics(req)
        if m.ttft_s is not None:
            self.ttft.labels(name).observe(m.ttft_s)
        for gap in m.itls_s:
            self.itl.labels(name).observe(gap)
        if m.tpot_s is not None:
            self.tpot.labels(name).observe(m.tpot_s)
        if m.e2e_s is not None:
            self.e2e.labels(name).observe(m.e2e_s)
        if req.slo.is_empty:
            return
        for metric, ok, bound in (("ttft", m.ttft_met, req.slo.ttft_s), ("tpot", m.tpot_met, req.slo.tpot_s),
                                  ("e2e", m.e2e_met, req.slo.e2e_s)):
            if bound is not None and not ok:
                self.violations.labels(req.slo_class, metric).inc()
        tally = self._met.setdefault(req.slo_class, [0, 0])
        tally[0] += int(m.met)
        tally[1] += 1
        self.attainment.labels(req.slo_class).set(tally[0] / tally[1])

    def on_reject(self, kind: str) -> None:
        self.rejected.labels(kind).inc()


def violation_risk(scheduler: Scheduler, now: float) -> float:
    reqs = [r for r in scheduler.requests.values() if not r.slo.is_empty]
    if not reqs:
        return 0.0
    running = scheduler.running
    k = len(running)
    ctx = sum(r.num_tokens for r in running) / k if k else 0.0
    step = scheduler.latency.decode_time(k, ctx)
    at_risk = 0
    for r in reqs:
        if r.token_times_s:
            at_risk += r.slo.tpot_s is not None and step > r.slo.tpot_s
        else:
            due = r.ttft_deadline_s
            at_risk += due is not None and now > due
    return at_risk / len(reqs)
