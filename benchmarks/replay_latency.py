"""Replay a live run's iterations through the latency model offline: what would this version of the model have
predicted, learning online as the server does, from the model the server started with?

    python benchmarks/replay_latency.py RECORDS.json [RECORDS.json ...]

RECORDS.json is what `benchmarks/live_fidelity.py --records` writes: every iteration the server logged (its
shape, its measured time, what the server predicted) and the server's starting model (`start_model`; files
written before the benchmark kept it lack it). Each iteration goes through `LatencyModel.observe` in order, as
on the server, and the prediction taken before the model learnt from it is compared with the measured time. So a
change to the model (a new calibration rule, a new term) can be judged on a real run's iterations in seconds
instead of a 30-minute live run. The server's own predictions are printed beside the replay's: on an unchanged
model the two agree, except after the server's idle re-profiles, which the replay does not repeat (it cannot
time the device).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_fidelity import error_stats  # noqa: E402  (the live benchmark's error figures)

from sliceserve.core.latency import IterationSample, LatencyModel  # noqa: E402


def replay(start: LatencyModel, records: list) -> tuple[list, LatencyModel]:
    """(records with the replayed prediction in place of the server's, the model after the last one). A record is
    the live poller's (t, kind, predicted_s, measured_s, decodes, prompt tokens, decodes' mean context, prefix)."""
    model = start.copy()
    out = []
    for t, kind, _, measured, decodes, tokens, ctx, prefix in records:
        sample = IterationSample(decodes or 0, ctx or 0.0, tokens or 0, measured, prefix or 0.0)
        out.append((t, kind, model.observe(sample), measured, decodes, tokens, ctx, prefix))
    return out, model


def _cells(stats: dict) -> str:
    return "; ".join(f"{kind} {med:.1%} / {p90:.1%} (n={n})" for kind, (n, med, p90) in stats.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+", help="files written by live_fidelity.py --records")
    args = ap.parse_args(argv)
    for path in args.records:
        data = json.loads(Path(path).read_text())
        if not data.get("start_model"):
            print(f"{path}: no start_model (a records file from before live_fidelity.py kept it); nothing to replay "
                  "from", file=sys.stderr)
            return 2
        records = data["records"]
        replayed, end = replay(LatencyModel.from_dict(data["start_model"]), records)
        print(f"{path}: {len(records)} iterations")
        print(f"  server's predictions  (median / p90 |pred/meas - 1|): {_cells(error_stats(records))}")
        print(f"  replayed predictions  (median / p90 |pred/meas - 1|): {_cells(error_stats(replayed))}")
        print(f"  replayed model at the end: l(1) {end.decode_time(1) * 1e3:.1f} ms, p(256) "
              f"{end.prefill_time(256) * 1e3:.0f} ms, factors decode {end.decode_factor:.3f}, "
              f"prefill {end.prefill_factor:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
