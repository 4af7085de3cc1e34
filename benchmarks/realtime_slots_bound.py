"""What a plain four-slot server could do for edge-mix's real-time class on `paper-4060ti`.

    python benchmarks/realtime_slots_bound.py [--rates 1:12:1] [--duration 300] [--seed 1]

The device holds four real-time streams at 20 tokens/s (20 * l(4) = 1000 ms = P). This takes the same
real-time arrivals `simulate` generates and serves them first come first served on four slots: an arrival
starts when a slot frees, if its prefill (the profile's 20 ms + 0.25 ms/token) still ends within its TTFT,
and then holds the slot for output tokens x 50 ms; otherwise it is lost. The share served is a yardstick
for "the real-time load fits the device", not a proof of optimality (choosing whom to serve could do a
little better).
"""
from __future__ import annotations

import argparse
import heapq

from sliceserve.bench.sweep import parse_rate_range
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="1:12:1")
    p.add_argument("--duration", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    print("| rate | real-time arrivals | served in time by a greedy 4-slot server |\n|---|---|---|")
    for rate in parse_rate_range(args.rates):
        n, share = served_share(rate, args.duration, args.seed)
        print(f"| {rate:g} | {n} | {share:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
