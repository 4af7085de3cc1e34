"""The embedding-flood workload of `embedding_flood.py` on the simulator: the same scheduler (SLICE, the
same EngineCore) with a latency model as the device, so the question "does the policy let embeddings starve
the real-time class" is answered apart from a shared machine's noise. Used by `embedding_flood.py --simulate`.

The device is a latency profile (a file from `sliceserve profile`, a built-in name, or the embedded model's
quick estimate measured here) with `--noise` (lognormal sd per iteration) and, optionally, a slowdown the
scheduler does not know about (`--slowdown`, as a busy VM). The server's door is modelled as the server keeps
it (AsyncEngine): a waiting queue of `MAX_WAITING` where a newcomer of higher utility displaces the newest of
the least valuable, and `MAX_QUEUE_TIME_S` without a result ends a request (503 on the server).
"""
from __future__ import annotations

import random
from typing import Any

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore
from sliceserve.metrics import request_metrics
from sliceserve.request import Request, SamplingParams
from sliceserve.sim.executor import SimulatedExecutor
from sliceserve.sim.simulator import Simulator
from sliceserve.slo import SLO

RT_PROMPT_TOKENS = 45          # a QUESTIONS entry inside SmolLM2's chat template
TOKENS_PER_WORD = 1.3          # WORDS joined by spaces, SmolLM2's tokenizer (measured: 100 words ~ 130 tokens)
MAX_WAITING = 64               # the server's defaults (docs/SERVER.md)
MAX_QUEUE_TIME_S = 60.0


def _arrive(core: EngineCore, sim: Simulator, req: Request, now: float) -> None:
    """The server's door: full queue -> displace a less valuable waiting request, or refuse the newcomer."""
    sched = core.scheduler
    if len(sched.waiting) >= MAX_WAITING:
        victims = [r for r in sched.waiting if r.utility < req.utility and r.num_output_tokens == 0]
        if not victims:
            return                                   # refused (503 queue_full): it never runs, counts as a miss
        victim = min(victims, key=lambda r: (r.utility, -r.arrival_s))
        core.abort(victim.req_id, now)
    core.add_request(req, now)
    sim.at(now + MAX_QUEUE_TIME_S, lambda t: core.abort(req.req_id, t) if not req.token_times_s else None)


def _add(core: EngineCore, sim: Simulator, reqs: list[Request]) -> None:
    for req in reqs:
        sim.at(req.arrival_s, lambda now, r=req: _arrive(core, sim, r, now))


def _engine(device: LatencyModel, args: Any) -> EngineCore:
    cfg = SchedulerConfig(policy=args.policy, num_kv_blocks=4096, block_size=16, max_model_len=2048)
    executor = SimulatedExecutor(device, noise=args.noise, seed=args.seed)
    executor.slowdown = args.slowdown
    return EngineCore(make_scheduler(args.policy, cfg, device.copy()), executor)


def _embed_req(rid: str, arrival: float, n_tokens: int, ttft_s: float, rng: random.Random) -> Request:
    return Request(rid, [rng.randrange(100, 40000) for _ in range(n_tokens)], SamplingParams(max_tokens=1),
                   arrival, slo=SLO(ttft_s=ttft_s), slo_class="embedding", utility=0.5, embed=True)


def capacity(device: LatencyModel, args: Any, ttft_s: float) -> float:
    """Embeddings per second with a standing backlog: a full waiting queue at time 0, over the makespan."""
    rng, n_tok = random.Random(args.seed + 7), round(args.emb_words * TOKENS_PER_WORD)
    reqs = [_embed_req(f"c{i}", 0.0, n_tok, ttft_s * 100, rng) for i in range(MAX_WAITING)]
    sim = Simulator(_engine(device, args))
    sim.add_arrivals(reqs)
    end = sim.run().end_s
    return sum(r.embedding is not None for r in reqs) / end


def run(device: LatencyModel, args: Any, bounds: dict, emb_ttft_ms: float, flood_rate: float,
        rt_times: list[float], emb_times: list[float]) -> dict:
    rng = random.Random(args.seed + 1)
    rt = [Request(f"rt{i}", [5] * RT_PROMPT_TOKENS, SamplingParams(max_tokens=args.rt_max_tokens, ignore_eos=True), t,
                  slo=SLO(ttft_s=bounds["ttft_ms"] / 1e3, tpot_s=bounds["tpot_ms"] / 1e3), slo_class="realtime",
                  utility=100.0) for i, t in enumerate(rt_times)]
    n_tok = round(args.emb_words * TOKENS_PER_WORD)
    emb = [_embed_req(f"e{i}", t, n_tok, emb_ttft_ms / 1e3, rng) for i, t in enumerate(emb_times if flood_rate else [])]
    core = _engine(device, args)
    sim = Simulator(core, max_time_s=args.duration + 600)
    _add(core, sim, rt + emb)
    sim.run()
    metrics = [request_metrics(r) for r in rt]
    met = sum(m.met for m in metrics)
    done = sum(r.embedding is not None for r in emb)
    ttfts = sorted(m.ttft_s for m in metrics if m.ttft_s is not None)
    tpots = sorted(m.tpot_s for m in metrics if m.tpot_s is not None)
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3 if xs else float("nan")  # noqa: E731
    return {"rt_requests": len(rt), "rt_met": met, "rt_attainment": met / len(rt) if rt else 0.0,
            "rt_ttft_p50_ms": pct(ttfts, 0.5), "rt_ttft_p90_ms": pct(ttfts, 0.9), "rt_tpot_p50_ms": pct(tpots, 0.5),
            "rt_tpot_p90_ms": pct(tpots, 0.9), "emb_ok": done, "emb_sent": len(emb),
            "emb_per_s": done / args.duration}
