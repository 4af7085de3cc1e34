"""What the device could do for edge-mix's real-time class on `paper-4060ti`, two ways.

    python benchmarks/realtime_slots_bound.py [--rates 1:12:1] [--duration 300] [--seed 1] [--policies slice,sarathi,vllm]

The device holds four real-time streams at 20 tokens/s (20 * l(4) = 1000 ms = P). This takes the same
real-time arrivals `simulate` generates and serves them first come first served on four slots: an arrival
starts when a slot frees, if its prefill (the profile's 20 ms + 0.25 ms/token) still ends within its TTFT,
and then holds the slot for output tokens x 50 ms; otherwise it is lost. The share served is a yardstick
for "the real-time load fits the device", not a proof of optimality (choosing whom to serve could do a
little better). It is idealised: a stream's first token comes the moment its prefill ends and every later
one exactly 50 ms apart, so a prompt never waits for, nor delays, the other streams' decode steps.

The second measure drops that idealisation: the same real-time arrivals alone (every other class removed)
through the simulated engine, per policy in `--policies`, best kept. Each prompt's prefill now shares
iterations with the other streams' decode steps, as on the device. Where even this stays below 0.95, the
real-time class's own load does not fit the device, whatever the other classes do.
"""
from __future__ import annotations

import argparse
import heapq
from dataclasses import replace

from sliceserve.bench.compare import SimSettings, run_policy
from sliceserve.bench.sweep import parse_rate_range
from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import BUILTIN_PROFILES
from sliceserve.workload import generate, get_preset

SLOTS = 4


def served_share(rate: float, duration_s: float, seed: int) -> tuple[int, float]:
    rt = {m.name: m.slo_class.slo for m in get_preset("edge-mix")}["realtime"]
    profile = BUILTIN_PROFILES["paper-4060ti"]
    arrivals = sorted((s for s in generate("edge-mix", rate, duration_s, seed).specs if s.slo_class == "realtime"),
                      key=lambda s: s.arrival_s)
    free_at = [0.0] * SLOTS
    served = 0
    for spec in arrivals:
        slot_free = heapq.heappop(free_at)
        start = max(slot_free, spec.arrival_s)
        prefill = profile.prefill_time(spec.prompt_len)
        if start + prefill <= spec.arrival_s + rt.ttft_s + 1e-9:
            served += 1
            slot_free = start + prefill + spec.output_len * rt.tpot_s
        heapq.heappush(free_at, slot_free)
    return len(arrivals), served / len(arrivals) if arrivals else 1.0


def alone_share(rate: float, duration_s: float, seed: int, policy: str) -> float:
    """Real-time attainment with only the real-time arrivals, simulated on `paper-4060ti` with `policy`."""
    workload = generate("edge-mix", rate, duration_s, seed)
    workload = replace(workload, specs=tuple(s for s in workload.specs if s.slo_class == "realtime"))
    settings = SimSettings(SchedulerConfig(), profile="paper-4060ti", include_requests=False)
    return run_policy(policy, workload, settings)["per_class"]["realtime"]["slo_attainment"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="1:12:1")
    p.add_argument("--duration", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--policies", default="slice,sarathi,vllm", help="policies for the real-time-alone runs")
    args = p.parse_args(argv)
    policies = [x for x in args.policies.split(",") if x]
    print("| rate | real-time arrivals | greedy 4-slot server (idealised) | "
          + " | ".join(f"alone: {x}" for x in policies) + " | alone: best |")
    print("|---|---|---|" + "---|" * (len(policies) + 1))
    for rate in parse_rate_range(args.rates):
        n, share = served_share(rate, args.duration, args.seed)
        alone = [alone_share(rate, args.duration, args.seed, x) for x in policies]
        cells = " | ".join(f"{a:.3f}" for a in alone)
        print(f"| {rate:g} | {n} | {share:.3f} | {cells} | {max(alone, default=float('nan')):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
