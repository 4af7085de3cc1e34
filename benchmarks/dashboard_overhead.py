"""What the dashboard's recording costs the engine (a benchmark script, not a test): prints a table.

The simulator runs the same workload twice, side by side: the plain executor and observer, then with the
dashboard's ActivityRecorder as the engine observer (as a
server with the dashboard runs). Reported: wall microseconds per iteration for both and their difference,
and the wall cost of one `/v1/status` activity snapshot (copy + JSON encoding) with full rings.
The simulated executor itself costs almost nothing, so the difference is the recording's own overhead;
on the real engine an iteration takes milliseconds (CPU: tens of ms).

Run: `.venv/bin/python benchmarks/dashboard_overhead.py [--running 64] [--waiting 200] [--repeat 3]`
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sliceserve.config import SchedulerConfig  # noqa: E402
from sliceserve.core.latency import load_profile  # noqa: E402
from sliceserve.core.policies import make_scheduler  # noqa: E402
from sliceserve.engine.core import EngineCore  # noqa: E402
from sliceserve.request import Request, SamplingParams  # noqa: E402
from sliceserve.server.dashboard.activity import ActivityRecorder  # noqa: E402
from sliceserve.sim import SimulatedExecutor  # noqa: E402
from sliceserve.slo import SLO  # noqa: E402

CLASSES = (("realtime", SLO(ttft_s=30.0, tpot_s=1.0), 100.0), ("batch", SLO(e2e_s=600.0), 1.0))


def _engine(policy: str, running: int, waiting: int, dashboard: bool) -> tuple[EngineCore, ActivityRecorder | None]:
    cfg = SchedulerConfig(policy=policy, max_num_seqs=running, num_kv_blocks=100_000, max_model_len=4096)
    sched = make_scheduler(policy, cfg, load_profile("paper-4060ti"))
    executor = SimulatedExecutor(sched.latency.copy())
    recorder = None
    if dashboard:
        recorder = ActivityRecorder()
    core = EngineCore(sched, executor)
    for i in range(running + waiting):
        name, slo, util = CLASSES[i % 2]
        core.add_request(Request(f"r{i}", [1] * 64, SamplingParams(max_tokens=2000, ignore_eos=True), 0.0, slo=slo,
                                 slo_class=name, utility=util), 0.0)
    return core, recorder


def per_iteration_us(policy: str, running: int, waiting: int, dashboard: bool, iterations: int) -> float:
    core, recorder = _engine(policy, running, waiting, dashboard)
    now = 0.0
    for _ in range(50):   # prefills done, a steady decode batch
        now = core.step(now).end_s
    t0 = time.perf_counter()
    for _ in range(iterations):
        step = core.step(now)
        now = step.end_s
        if recorder is not None:
            recorder.on_step(step, core.scheduler)
    return (time.perf_counter() - t0) / iterations * 1e6


def snapshot_us(running: int, waiting: int) -> tuple[float, int]:
    core, recorder = _engine("vllm", running, waiting, True)
    now = 0.0
    for _ in range(200):
        step = core.step(now)
        now = step.end_s
        recorder.on_step(step, core.scheduler)
    t0 = time.perf_counter()
    n = 50
    for _ in range(n):
        body = json.dumps(recorder.snapshot(core.scheduler))
    return (time.perf_counter() - t0) / n * 1e6, len(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="vllm,slice")
    ap.add_argument("--running", type=int, default=64)
    ap.add_argument("--waiting", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{args.running} running + {args.waiting} waiting, {args.iterations} iterations, median of {args.repeat}")
    print(f"{'policy':<8} {'plain us/it':>12} {'dashboard us/it':>16} {'difference':>11}")
    for policy in args.policies.split(","):
        plain, dash = [], []
        for _ in range(args.repeat):   # interleaved, so drifting machine load hits both alike
            plain.append(per_iteration_us(policy, args.running, args.waiting, False, args.iterations))
            dash.append(per_iteration_us(policy, args.running, args.waiting, True, args.iterations))
        p, d = statistics.median(plain), statistics.median(dash)
        print(f"{policy:<8} {p:>12.1f} {d:>16.1f} {d - p:>+10.1f}")
    us, size = snapshot_us(args.running, args.waiting)
    print(f"activity snapshot + JSON: {us:.0f} us ({size / 1024:.0f} KiB) with full rings")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
