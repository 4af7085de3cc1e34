"""Where a policy's device time goes, by request outcome: met, refused, or served and missed anyway (issue 21).

Runs `sliceserve simulate` in this process with the engine step wrapped: each iteration's modelled time is
attributed to the requests in it (a prompt chunk its prefill-time share, the rest split evenly over the
decodes), then summed per SLO class and outcome from the run's per-request records.

    .venv/bin/python benchmarks/device_time_by_outcome.py --policy slice,scorpio --workload edge-mix \\
        --trace /work/shared/data/azure-llm-2023/conv.csv \\
        --trace-mix realtime=0.2,nrt-100=0.3,nrt-120=0.3,nrt-250=0.2 --profile paper-4060ti \\
        --duration 300 --request-rate 1.2 --seed 2 [--set slice_drop_lost=off --set slice_lend_reserve=false]

Every argument goes to `sliceserve simulate` (one rate, no --sweep-rate).
"""
from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path

from sliceserve import cli
from sliceserve.engine import core as engine_core


def _outcome(rec: dict) -> str:
    if rec["met"]:
        return "met"
    if rec["finish_reason"] == "rejected":
        return "refused"
    missed = [name for name in ("ttft", "tpot", "e2e") if not rec[f"{name}_met"]]
    return "served, missed " + "+".join(missed)


def main(argv: list[str]) -> int:
    seconds: dict[int, dict[str, float]] = {}   # id(scheduler) -> req_id -> device seconds
    step = engine_core.EngineCore.step

    def timed_step(self, now):
        result = step(self, now)
        sched, elapsed = result.sched, result.end_s - result.start_s
        if sched.is_empty or elapsed <= 0:
            return result
        lat = self.scheduler.latency
        share = seconds.setdefault(id(self.scheduler), collections.defaultdict(float))
        prefill = {rid: lat.prefill_time(n) for rid, n in sched.prefill.items()}
        total = sum(prefill.values())
        scale = elapsed / total if total > elapsed or not sched.decode else 1.0
        for rid, t in prefill.items():
            share[rid] += t * scale
        rest = max(0.0, elapsed - total * scale)
        for rid in sched.decode:
            share[rid] += rest / len(sched.decode)
        return result

    engine_core.EngineCore.step = timed_step
    policies = argv[argv.index("--policy") + 1].split(",")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        cli.main(["simulate", *argv, "--output", str(out), "--no-progress"])
        results = json.loads(out.read_text())["results"]
    for policy, per_req in zip(policies, seconds.values()):   # policies run in the order given
        rows: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
        for rec in results[policy]["requests"]:
            row = rows[f"{rec['slo_class']:9s} {_outcome(rec)}"]
            row[0] += 1
            row[1] += per_req.get(rec["req_id"], 0.0)
        busy = sum(per_req.values())
        wasted = sum(s for k, (_, s) in rows.items() if "served, missed" in k)
        print(f"\n{policy}: device busy {busy:.1f} s, met {results[policy]['summary']['num_met']}, "
              f"{wasted:.1f} s ({wasted / busy:.0%}) on requests served and missed anyway")
        for key in sorted(rows):
            print(f"  {key:36s} {rows[key][0]:4d} requests {rows[key][1]:7.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
