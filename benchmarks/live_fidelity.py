"""Live fidelity of the latency model: the real server (default settings, embedded model) measured from outside.

Everything the server decides rests on its latency model; this measures how right it stays under load:
1. Fresh idle profiles of the device (`sliceserve profile` on `PROFILE_GRID`, `--profiles` of them back to back,
   before any server runs; the one of the median rate is used): the SLO scale of the workload (never the
   server's own estimate) and the device's sustainable edge-mix rate.
2. Run A: `sliceserve serve --overload reject --port P` (otherwise defaults), edge-mix at 0.5x, 1x and 2x the
   sustainable rate, then 1x again with a competing CPU-bound process that the benchmark starts a third of the
   way in and stops at two thirds (the condition under which the drift was seen). While it runs, /v1/status is
   polled every 2 s for the server's numbered per-iteration records (predicted before the model learnt from
   the iteration, measured after).
3. Fresh idle profiles again (as many) once run A's server is gone: the server's calibrated p(256) after the run
   is compared with their median p(256), as it was at the end of the load and after `--idle-s` idle seconds (when a
   drift re-profile was pending, it runs in that gap; the reading waits up to `--settle-s` more until none is
   pending).
4. Run B: the same arrivals (the contention phase with its competitor at the same times) against
   `--overload best_effort`, which parks what A refuses and serves it on time nobody else needs (`Scheduler.park`;
   before that change it served it beside feasible work; A itself refuses only what SLICE finds hopeless and
   parks the rest of its lost work, `slice_drop_lost: hopeless`): a request refused in A that met its SLO in B
   was a false refusal (`--replays N`: B N times, and also the refusals whose request met in every replay, and
   how far the replays disagree among themselves: of the requests that missed in the first, the share that
   met in the second).
Printed per load: iteration error |pred/meas - 1| (median, p90) per kind, admission-time predicted / measured
TTFT of admitted requests, refusals and false refusals, attainment with `reject` and with `best_effort`; for the
contention phase the error in 10 s windows around each change. The load average is printed beside every figure.

    python benchmarks/live_fidelity.py --phase-s 150 --seed 1 --output docs/results/live-fidelity.md
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from sliceserve.bench.device_scale import latency_scale
from sliceserve.bench.http import replay
from sliceserve.bench.spawn import ServerProcess
from sliceserve.bench.local import synthetic_requests
from sliceserve.core.latency import LatencyModel
from sliceserve.metrics import request_metrics
from sliceserve.metrics.latency_audit import ROLLING_S
from sliceserve.request import FinishReason
from sliceserve.workload import generate, get_preset

# Concurrency assumed for the sustainable rate: decode tokens cost l(B)/B each at batch B (edge-mix under load
# runs 4-12 streams; 8 is the middle).
_BATCH = 8


def _load() -> str:
    return "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# The executor every server and profile of a run uses (--backend): torch (the default) or llamacpp.
BACKEND = ["--backend", "torch"]


# The idle profile's grid: every decode batch up to _BATCH measured (`profile --quick` stops at 4, so its l(8), which
# sets the sustainable rate, was extrapolated: three quick profiles back to back read l(8) at 512 tokens as 62,
# 51 and 100 ms, and 1x as 0.484, 0.535 and 0.385 req/s, run 22), the quick grid's contexts and chunks, the
# profiler's default repeats.
PROFILE_GRID = ["--max-batch", str(_BATCH), "--contexts", "128,512", "--chunks", "32,256", "--repeats", "5"]


def idle_profile(path: Path) -> LatencyModel:
    subprocess.run([sys.executable, "-m", "sliceserve", "profile", *PROFILE_GRID, *BACKEND, "--output", str(path)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return LatencyModel.load(path)


def median_profile(work: Path, tag: str, n: int, seed: int) -> tuple[LatencyModel, list[float], list[LatencyModel]]:
    """`n` idle profiles back to back; the one whose sustainable rate is the median, and every rate. One
    profile's batch decode is a short measurement: on one VM within an hour a quick profile's l(1) read 15.1 and
    8.3 ms and 1x came out at 1.16-1.18 req/s against 0.92 (runs 19-21), so every phase of those runs was
    overloaded."""
    profiles = [idle_profile(work / f"{tag}-{i}.json") for i in range(n)]
    rates = [sustainable_rate(p, seed) for p in profiles]
    return profiles[sorted(range(n), key=rates.__getitem__)[n // 2]], rates, profiles


def sustainable_rate(profile: LatencyModel, seed: int) -> float:
    """Edge-mix requests per second the device works off: 1 / mean device seconds per request (its prompt
    once, its output at batch _BATCH)."""
    specs = generate("edge-mix", 1.0, 3000, seed).specs
    per_req = [profile.prefill_time(s.prompt_len) + s.output_len * profile.decode_time(_BATCH, s.prompt_len + s.output_len / 2) / _BATCH
               for s in specs]
    return 1.0 / statistics.mean(per_req)


class Server(ServerProcess):
    """The server under test, with what the load generator needs to know of its model."""

    def __init__(self, *extra: str) -> None:
        super().__init__(*BACKEND, *extra)
        models = httpx.get(self.url + "/v1/models").json()["data"][0]
        self.model, self.vocab, self.max_len = models["id"], models["vocab_size"], models["max_model_len"]

    def status(self) -> dict:
        return httpx.get(self.url + "/v1/status", timeout=10).json()


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) each thread of process `pid` has used (Linux /proc; {} elsewhere)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick   # utime, stime
    return out


def thread_cpu_line(pid: int, wall_s: float) -> str:
    """Where the server process's CPU went: its main thread (uvicorn's event loop: HTTP, streaming), its busiest
    other thread (the engine loop, which runs the model) and the rest, as shares of the wall time: on a 2-vCPU
    machine the event loop's Python work competes with the engine thread for the interpreter lock."""
    cpu = thread_cpu_s(pid)
    if not cpu:
        return "Server threads' CPU: not readable here"
    main = cpu.pop(pid, 0.0)
    engine = max(cpu.values(), default=0.0)
    rest = sum(cpu.values()) - engine
    return (f"Server threads' CPU over {wall_s / 60:.1f} min of run A: engine thread {engine:.0f} s "
            f"({engine / wall_s:.0%} of the wall time), main thread (event loop) {main:.0f} s ({main / wall_s:.0%}), "
            f"other threads {rest:.0f} s ({rest / wall_s:.0%})")


class IterationPoller(threading.Thread):
    """Takes every numbered iteration record from /v1/status once, stamped with this client's clock."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        # (t, kind, predicted_s, measured_s, decodes, prompt tokens, decodes' mean context, the chunk's prefix)
        self.server, self.seen, self.records = server, 0, []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(2.0):
            try:
                recent = self.server.status()["latency_model"]["recent"]
            except (httpx.HTTPError, KeyError):
                continue
            now = time.monotonic()
            for r in recent:
                if r["i"] > self.seen:
                    self.records.append((now, r["kind"], r["predicted_ms"] / 1e3, r["measured_ms"] / 1e3,
                                         r.get("decodes"), r.get("prompt_tokens"), r.get("decode_ctx"),
                                         r.get("prompt_prefix")))
            self.seen = max([self.seen] + [r["i"] for r in recent])

    def between(self, t0: float, t1: float) -> list[tuple[float, str, float, float]]:
        return [r for r in self.records if t0 <= r[0] < t1]


# Besides each iteration, runs of this many consecutive iterations of a kind (sum predicted / sum measured): the
# scale the scheduler decides on (a SLICE cycle, a TTFT, a TPOT averaged over tokens). On a shared CPU one
# iteration's time is mostly noise (the model's median log-ratio stays within +-4% in every minute of the runs,
# its spread is 0.28-0.39), which averages out over a run of iterations and a bias would not.
GROUP = 10


def error_stats(records: list, group: int = 1) -> dict[str, tuple[int, float, float]]:
    """kind -> (n, median, p90) of |pred/meas - 1| per iteration (`group` 1) or per run of `group` consecutive
    iterations of that kind; `prefill-bearing` pools prefill and mixed."""
    out = {}
    for name, kinds in (("decode", {"decode"}), ("prefill-bearing", {"prefill", "mixed"})):
        pairs = [(r[2], r[3]) for r in records if r[1] in kinds and r[3] > 0]
        runs = [pairs[i:i + group] for i in range(0, len(pairs) - group + 1, group)]
        errs = [abs(sum(p for p, _ in run) / sum(m for _, m in run) - 1.0) for run in runs]
        if errs:
            out[name] = (len(errs), float(np.median(errs)), float(np.quantile(errs, 0.9)))
    return out


def run_phase(server: Server, profile: LatencyModel, rate: float, duration_s: float, seed: int) -> list:
    scale = latency_scale(profile)
    wl = generate("edge-mix", rate, duration_s, seed, mix=get_preset("edge-mix", scale.slo, scale.ttft))
    reqs, _ = synthetic_requests(wl, "live", server.vocab, server.max_len, seed)
    asyncio.run(replay(server.url, reqs, server.model, 3 * duration_s + 120, False))
    return reqs


def summarize_phase(name: str, reqs: list, records: list) -> dict:
    refused = {r.req_id for r in reqs if r.finish_reason is FinishReason.REJECTED}
    ratios = [r.predicted_ttft_s / m.ttft_s for r in reqs if r.finish_reason in (FinishReason.STOP, FinishReason.LENGTH)
              and r.predicted_ttft_s and (m := request_metrics(r)).ttft_s]
    rt = [request_metrics(r).met for r in reqs if r.slo_class == "realtime"]
    return {"name": name, "n": len(reqs), "refused": refused, "errors": error_stats(records),
            "errors_grouped": error_stats(records, GROUP),
            "ttft_ratio_median": float(np.median(ratios)) if ratios else None, "n_ratios": len(ratios),
            "attainment": statistics.mean(request_metrics(r).met for r in reqs) if reqs else None,
            "realtime": statistics.mean(rt) if rt else None, "load": _load(),
            "refusal_kinds": refusal_kinds([r for r in reqs if r.finish_reason is FinishReason.REJECTED]),
            "refused_by": {r.req_id: refusal_kind(r.error or "") for r in reqs if r.finish_reason is FinishReason.REJECTED}}


REFUSERS = (   # (text in the refusal, who refused), most specific first: admission's message names "queued
    # requests ahead" and the queue timeout's says "no first token within max_queue_time", so neither "queue"
    # nor "no first token within" alone tells them apart (run 6 counted admission's refusals as "queue")
    ("waiting queue is full", "queue full"),
    ("max_queue_time", "queue timeout"),
    ("TTFT: no first token within", "policy (ttft lost)"),
    ("SLO can no longer be met", "policy (slo lost)"),
    ("TTFT: first token predicted", "policy (ttft predicted)"),   # SCORPIO's refusal of the unattainable
    ("under the current load", "admission"),
    ("even on an idle device", "idle-infeasible"),
    ("shed by the SLO controller", "controller shed"),
)


def refusal_kind(text: str) -> str:
    for needle, kind in REFUSERS:
        if needle in text:
            return kind
    return f"other ({text[:80]})"


def refusal_kinds_of(kinds: list[str]) -> dict[str, int]:
    return dict(Counter(kinds))


def refusal_kinds(refused: list) -> dict[str, int]:
    """Who refused (`REFUSERS`): admission's overload estimate (429 at the door), the policy once the TTFT had
    passed with no token out (SLICE's slice_reject_lost) or once it counts the SLO lost (slice_drop_lost), a full
    queue or a queue timeout, admission's idle-device check, the SLO controller's load shedding (a lower-value
    class refused while a higher-value one is at risk: docs/CONTROL.md), or anything else (named)."""
    return refusal_kinds_of([refusal_kind(r.error or "") for r in refused])


def contention_windows(poller: IterationPoller, start: float, on: float, off: float, end: float) -> list[str]:
    lines = []
    t = start
    while t < end:
        stats = error_stats(poller.between(t, t + 10))
        tag = "competitor on" if on <= t < off else "competitor off"
        dec = stats.get("decode")
        pre = stats.get("prefill-bearing")
        lines.append(f"| {t - start:5.0f}-{t - start + 10:.0f} s | {tag} | "
                     + (f"{dec[1]:.1%} / {dec[2]:.1%} (n={dec[0]})" if dec else "-") + " | "
                     + (f"{pre[1]:.1%} / {pre[2]:.1%} (n={pre[0]})" if pre else "-") + " |")
        t += 10
    return lines


# The iterations /v1/status's rolling error covers (LatencyAudit's ring buffer, all kinds together, of its last
# ROLLING_S seconds).
ROLLING = 512
BOUNDS = {"decode": (0.10, 0.30), "prefill-bearing": (0.10, 0.30)}   # the median / p90 bounds
MIN_SAMPLES = 10   # iterations of a kind a rolling window needs before its median and p90 are read


def rolling_series(records: list, t0: float, t1: float, window: int = ROLLING, window_s: float = ROLLING_S,
                   step_s: float = 1.0) -> list[tuple[float, dict]]:
    """The server's own rolling error (`error_stats` over its last ROLLING iterations of every kind within its
    last ROLLING_S seconds, as /v1/status computes it) every `step_s` seconds from t0 to t1, from the polled
    records (stamped when polled, so to within the poll's 2 s)."""
    times = [r[0] for r in records]
    out, t = [], t0
    while t <= t1:
        upto = bisect.bisect_right(times, t)
        since = bisect.bisect_right(times, t - window_s)
        out.append((t, error_stats(records[max(since, upto - window):upto])))
        t += step_s
    return out


def settle_lines(records: list, changes: list[tuple[str, float]], end: float, window: int = ROLLING,
                 window_s: float = ROLLING_S) -> list[str]:
    """For each change (label, time) up to the next one (or `end`): how long the server's rolling error took to
    be back within the issue's bounds for good (every second from then to the next change), and the worst
    rolling median from 30 s after the change on. A second whose window holds fewer than MIN_SAMPLES iterations
    of a kind says nothing about that kind's error (once the load has drained, the window can be all decodes, or
    hold two prompt chunks, whose p90 is their maximum: run 25's prefill-bearing cell read "+66 s" from three
    chunks in the drain after 60 s within the bounds): it is skipped, not counted out of bounds."""
    lines = []
    for i, (label, at) in enumerate(changes):
        until = changes[i + 1][1] if i + 1 < len(changes) else end
        series = rolling_series(records, at, until, window, window_s)
        cells = []
        for kind, (med_bound, p90_bound) in BOUNDS.items():
            said = [(t, e[kind]) for t, e in series if kind in e and e[kind][0] >= MIN_SAMPLES]
            bad = [t for t, (_, med, p90) in said if not (med <= med_bound and p90 <= p90_bound)]
            settled = "at once" if not bad else (f"+{bad[-1] + 1 - at:.0f} s" if bad[-1] + 1 <= until else "not")
            late = [med for t, (_, med, _) in said if t >= at + 30]
            cells.append(f"{kind} within bounds for good {settled}"
                         + (f" (worst median from +30 s {max(late):.1%})" if late else ""))
        lines.append(f"- {label} ({until - at:.0f} s to the next change): " + "; ".join(cells))
    return lines


def run_a(profile: LatencyModel, loads: list[float], rate1: float, args) -> tuple[list[dict], list[str], dict, dict]:
    server = Server("--overload", "reject")
    # The model the server starts from (its own start-up estimate), kept with the records so that its iterations
    # can be replayed offline through another version of the model (benchmarks/replay_latency.py).
    start_model = server.status()["latency_model"]["coefficients"]
    poller = IterationPoller(server)
    poller.start()
    phases, reqs_by_phase = [], {}
    t_first = time.monotonic()
    try:
        for i, load in enumerate(loads):
            t0 = time.monotonic()
            reqs = run_phase(server, profile, load * rate1, args.phase_s, args.seed + i)
            time.sleep(2.5)   # the poller's last take
            reqs_by_phase[load] = reqs
            phases.append(summarize_phase(f"{load:g}x", reqs, poller.between(t0, time.monotonic())))
            print(_row(phases[-1]), flush=True)
        t0 = time.monotonic()
        reqs, on, off = contention_phase(server, profile, rate1, args)
        reqs_by_phase[CONTENTION] = reqs
        time.sleep(2.5)
        end = time.monotonic()
        phases.append(summarize_phase(CONTENTION, reqs, poller.between(t0, end)))
        print(_row(phases[-1]), flush=True)
        windows = contention_windows(poller, t0, on, off, end)
        changes = [("competitor started", on), ("competitor stopped", off)]
        settle = settle_lines(poller.records, changes, end)
        final = server.status()["latency_model"]
        final["threads"] = thread_cpu_line(server.proc.pid, time.monotonic() - t_first)
        final["settle"] = settle
        # Then the server idle for a while: a drift re-profile pending at the end of the load runs in this gap, and
        # the figure read after it is what the server would use for the next arrival.
        final["after_idle"] = rested_status(server.status, args.idle_s, args.settle_s)
    finally:
        poller.stopping.set()
        server.stop()
    if args.records:
        Path(args.records).write_text(json.dumps({"t0": t_first, "records": poller.records,
                                                  "drift": final.get("drift"), "start_model": start_model,
                                                  "end_model": final.get("coefficients"),
                                                  # the contention phase's changes, on the records' clock: the
                                                  # settle time can be recomputed from this file (`settle_lines`)
                                                  "changes": changes, "contention_end": end}) + "\n")
    return phases, windows, final, reqs_by_phase


def rested_status(status, idle_s: float, settle_s: float, step_s: float = 1.0, clock=time.monotonic,
                  sleep=time.sleep) -> dict:
    """The server's latency model once it has been idle `idle_s` seconds and its drift re-profiles pending then
    have run, waiting for them at most `settle_s` seconds more (`status`: () -> /v1/status). Each re-check waits
    for the idle gap (`recheck_idle_s`, 5 s) and they run one at a time: on llama.cpp a decode and a prefill
    re-check took longer than a 10 s gap (run 6 of docs/results/live-fidelity.md read both still pending), so
    a fixed gap read the model before the server's own idle correction. `rested_s` in the result: how long it
    was idle when read."""
    start = clock()
    sleep(idle_s)
    model = status()["latency_model"]
    while (model.get("drift") or {}).get("pending") and clock() - start < idle_s + settle_s:
        sleep(step_s)
        model = status()["latency_model"]
    return {**model, "rested_s": clock() - start}


CONTENTION = "1x + competitor"


def contention_phase(server: Server, profile: LatencyModel, rate1: float, args) -> tuple[list, float, float]:
    """1x with a CPU-bound competitor started a third of the way in and stopped at two thirds (killed in any
    case when the phase ends); returns the requests and when the competitor started and stopped."""
    t0 = time.monotonic()
    on, off = t0 + args.phase_s / 3, t0 + 2 * args.phase_s / 3
    competitor: list[subprocess.Popen] = []

    def stop() -> None:
        for proc in competitor:
            proc.kill()

    timers = [threading.Timer(args.phase_s / 3, lambda: competitor.append(
                  subprocess.Popen([sys.executable, "-c", "while True: pass"]))),
              threading.Timer(2 * args.phase_s / 3, stop)]
    for timer in timers:
        timer.start()
    try:
        reqs = run_phase(server, profile, rate1, args.phase_s, args.seed + 10)
    finally:
        for timer in timers:
            timer.cancel()
        stop()
    return reqs, on, off


def run_b(profile: LatencyModel, loads: list[float], rate1: float, args) -> dict[float | str, dict[str, bool]]:
    """The same arrivals, every load and the contention phase (its competitor at the same times), against
    `--overload best_effort`: whether each request met its SLO."""
    server = Server("--overload", "best_effort")
    try:
        met: dict[float | str, dict[str, bool]] = {
            load: {r.req_id: request_metrics(r).met
                   for r in run_phase(server, profile, load * rate1, args.phase_s, args.seed + i)}
            for i, load in enumerate(loads)}
        met[CONTENTION] = {r.req_id: request_metrics(r).met for r in contention_phase(server, profile, rate1, args)[0]}
        return met
    finally:
        server.stop()


def request_rows(reqs_by_phase: dict, replays: list[dict[float | str, dict[str, bool]]]) -> list[dict]:
    """Every run A request as its client saw it (`RequestMetrics.to_record`), with its phase, SLO bounds, the
    server's admission-time predictions, its refusal message, and whether it met its SLO in each best_effort
    replay: what a single TTFT ratio or false-refusal count is made of, for reading one request at a time."""
    rows = []
    for phase, reqs in reqs_by_phase.items():
        for r in reqs:
            slo = r.slo
            name = phase if isinstance(phase, str) else f"{phase:g}x"
            rows.append({"phase": name, **request_metrics(r).to_record(),
                         "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "e2e_s": slo.e2e_s},
                         "predicted_ttft_s": r.predicted_ttft_s, "predicted_tpot_s": r.predicted_tpot_s,
                         "error": r.error, "met_in_replays": [b.get(phase, {}).get(r.req_id) for b in replays]})
    return rows


def false_in_every(refused: set[str], replays: list[dict[str, bool]]) -> int:
    """Refusals whose request met its SLO in every best_effort replay: with one replay the issue's false-refusal
    count; with several, a count that a replay's own luck does not inflate (two replays differing only by ~2 %
    iteration noise disagree on 26-42 % of the requests that missed: docs/results/admission-fidelity.md)."""
    return sum(all(met.get(rid, False) for met in replays) for rid in refused)


def replay_flips(first: dict[str, bool], second: dict[str, bool]) -> tuple[int, int]:
    """(requests that missed their SLO in the `first` best_effort replay, how many of them met it in the `second`):
    how far two runs of the same arrivals disagree with nothing changed but the device's own timing. A refusal
    of exactly the requests that missed in one replay would score that share as "false" against the other."""
    missed = [rid for rid, ok in first.items() if not ok]
    return len(missed), sum(second.get(rid, False) for rid in missed)


def _share(part: int, whole: int) -> str:
    return f"{part} / {whole} ({part / whole:.0%})" if whole else f"{part} / 0"


def replay_lines(phases: list[dict], keys: list, replays: list[dict]) -> list[str]:
    """The report's lines on the best_effort replays: with several, the refusals whose request met in every one
    and the replays' own disagreement; always, attainment with `reject` beside the first replay's."""
    lines = []
    if len(replays) > 1:
        lines += ["", f"False refusals counting only requests met in all {len(replays)} best_effort replays: "
                  + "; ".join(f"{p['name']} {p['false_in_every']} / {len(p['refused'])}" for p in phases
                              if "false_in_every" in p),
                  "", "The best_effort replays' own disagreement (of the requests that missed their SLO in the first "
                  "replay, those that met it in the second): "
                  + "; ".join(f"{p['name']} {_share(*reversed(replay_flips(replays[0][k], replays[1][k])))}"
                              for p, k in zip(phases, keys))]
    return lines + ["", "Attainment with `reject` (the table) and in the first best_effort replay: "
                    + "; ".join(f"{p['name']} {p['attainment']:.3f} vs {statistics.mean(replays[0][k].values()):.3f}"
                                for p, k in zip(phases, keys) if replays[0][k])]


def _row(p: dict) -> str:
    cells = []
    for kind in ("decode", "prefill-bearing"):
        e = p["errors"].get(kind)
        cells.append(f"{e[1]:.1%} / {e[2]:.1%} (n={e[0]})" if e else "-")
        g = p["errors_grouped"].get(kind)
        cells[-1] += f"; x{GROUP}: {g[1]:.1%} / {g[2]:.1%}" if g else f"; x{GROUP}: -"
    ratio = f"{p['ttft_ratio_median']:.2f} (n={p['n_ratios']})" if p["ttft_ratio_median"] is not None else "-"
    false = p.get("false_refusals")
    false_cell = f"{false} / {len(p['refused'])}" if false is not None else f"? / {len(p['refused'])}"
    return (f"| {p['name']} | {p['n']} | {cells[0]} | {cells[1]} | {ratio} | {false_cell} | "
            f"{p['attainment']:.3f} | {p['realtime'] if p['realtime'] is None else round(p['realtime'], 3)} | {p['load']} |")


def _drift_line(drift: dict | None) -> str:
    if not drift:
        return "Drift detector: off"
    events = "; ".join(f"{e['term']} at {e['at_s']:.0f} s x{e.get('change', float('nan')):.2f}"
                       + (f" ({e['error']})" if "error" in e else "") + (f" [{e['reason']}]" if e.get("reason") else "")
                       for e in drift["recent"])
    return (f"Drift detector: re-profiles decode {drift['reprofiles']['decode']}, prefill "
            f"{drift['reprofiles']['prefill']} ({events or 'none'}); pending {drift['pending']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase-s", type=float, default=150.0, help="seconds of arrivals per load (default 150)")
    ap.add_argument("--loads", default="0.5,1,2", help="multiples of the sustainable rate (default 0.5,1,2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate-1x", type=float, default=None, help="req/s taken as 1x (default: from the idle profile)")
    ap.add_argument("--output", default=None, help="append the markdown report here")
    ap.add_argument("--idle-s", type=float, default=10.0,
                    help="seconds the server stays idle after the load before its model is read again (default 10)")
    ap.add_argument("--settle-s", type=float, default=60.0,
                    help="after --idle-s, seconds more to wait for the server's pending drift re-profiles to run "
                         "before its model is read (default 60)")
    ap.add_argument("--profiles", type=int, default=3,
                    help="idle profiles taken before and after run A; the one of the median sustainable rate "
                         "is used (default 3)")
    ap.add_argument("--records", default=None, help="write every polled iteration record (JSON) here")
    ap.add_argument("--requests", default=None,
                    help="write every run A request here (JSON lines: measured, predicted, refusal, met in each "
                         "replay)")
    ap.add_argument("--replays", type=int, default=1,
                    help="best_effort replays of the same arrivals (default 1, the issue's measure; with more, also "
                         "prints the refusals whose request met its SLO in every replay)")
    ap.add_argument("--backend", choices=("torch", "llamacpp"), default="torch",
                    help="the servers' and profiles' executor (llamacpp needs llama-cpp-python in this interpreter: "
                         "run the benchmark with the Python that has it)")
    args = ap.parse_args()
    if args.replays < 1:
        ap.error(f"--replays must be at least 1, got {args.replays}")
    if args.profiles < 1:
        ap.error(f"--profiles must be at least 1, got {args.profiles}")
    BACKEND[1] = args.backend
    loads = [float(x) for x in args.loads.split(",")]
    work = Path(tempfile.mkdtemp(prefix="live-fidelity-"))
    print(f"{args.profiles} idle profiles ... ({_load()})", flush=True)
    before, rates, befores = median_profile(work, "idle-before", args.profiles, args.seed)
    rate1 = args.rate_1x or sustainable_rate(before, args.seed)
    print(f"idle p(256) {before.prefill_time(256) * 1e3:.0f} ms, l(1) {before.decode_time(1) * 1e3:.1f} ms "
          f"(the profile of the median rate; rates {', '.join(f'{r:.3f}' for r in rates)}); "
          f"1x = {rate1:.3f} req/s of edge-mix", flush=True)
    head = (f"| load | requests | decode err median / p90 (per iteration; per {GROUP}) | prefill-bearing err median / p90 (same) | pred/meas TTFT median | "
            "false refusals / refusals | attainment | realtime | load avg |\n|---|---|---|---|---|---|---|---|---|")
    print(head, flush=True)
    t_start = time.monotonic()
    phases, windows, final, reqs_a = run_a(before, loads, rate1, args)
    minutes = (time.monotonic() - t_start) / 60
    # The reference for the prefill coefficient: the median p(256) and l(1) of the fresh profiles (not those of the
    # profile of the median rate: run 22's three read p(256) 915, 985 and 1196 ms, and the median rate's was 1196).
    after = [idle_profile(work / f"idle-after-{i}.json") for i in range(args.profiles)]
    idle_p256_ms = statistics.median(m.prefill_time(256) * 1e3 for m in after)
    idle_l1_ms = statistics.median(m.decode_time(1) * 1e3 for m in after)
    replays = [run_b(before, loads, rate1, args) for _ in range(args.replays)]
    for p, load in zip(phases, [*loads, CONTENTION]):
        met_b = replays[0][load]
        p["false_refusals"] = sum(met_b.get(rid, False) for rid in p["refused"])
        p["false_by"] = refusal_kinds_of([p["refused_by"][rid] for rid in p["refused"] if met_b.get(rid, False)])
        p["false_in_every"] = false_in_every(p["refused"], [r[load] for r in replays])
    if args.requests:
        Path(args.requests).write_text("".join(json.dumps(row) + "\n" for row in request_rows(reqs_a, replays)))
    lines = ["", f"### Live fidelity ({time.strftime('%Y-%m-%d %H:%M')}, seed {args.seed}, {args.phase_s:g} s per load, "
             f"1x = {rate1:.3f} req/s, backend {args.backend})", "",
             f"The idle profiles' sustainable rates before run A: {', '.join(f'{r:.3f}' for r in rates)} req/s"
             + (" (1x set by --rate-1x)" if args.rate_1x else " (1x: their median)"), "", head] + [_row(p) for p in phases]
    lines += replay_lines(phases, [*loads, CONTENTION], replays)
    lines += ["", "Refusals by who refused: " + "; ".join(f"{p['name']} {p['refusal_kinds'] or '-'}" for p in phases),
              "", "False refusals by who refused: " + "; ".join(f"{p['name']} {p['false_by'] or '-'}" for p in phases
                                                               if "false_by" in p)]
    p_server, p_idle = final["prefill_256_ms"], idle_p256_ms
    # p(256) without the online factor: the coefficients as the last profile or idle re-profile measured them
    # (the factor is what load did to them since).
    p_measured = p_server / final["factors"]["prefill"]
    rested = final["after_idle"]
    lines += ["", f"After {minutes:.1f} min of mixed load: server p(256) {p_server:.0f} ms, fresh idle profiles "
              f"(median of {len(after)}: {', '.join(f'{m.prefill_time(256) * 1e3:.0f}' for m in after)}) "
              f"{p_idle:.0f} ms (ratio {p_server / p_idle:.2f}); before the run "
              f"{statistics.median(m.prefill_time(256) for m in befores) * 1e3:.0f} ms (median); "
              f"online factors decode {final['factors']['decode']:.3f}, prefill {final['factors']['prefill']:.3f} "
              f"(without it, as last measured: p(256) {p_measured:.0f} ms, ratio {p_measured / p_idle:.2f}); "
              f"{_load()}", "",
              f"The server after {rested['rested_s']:.0f} s idle: p(256) {rested['prefill_256_ms']:.0f} ms (ratio "
              f"{rested['prefill_256_ms'] / p_idle:.2f} to the fresh idle profiles), l(1) {rested['decode_l1_ms']:.1f} ms "
              f"(fresh profiles {idle_l1_ms:.1f} ms)", "",
              _drift_line(rested.get("drift")), "", final["threads"], "", "Contention phase (1x), error median / p90 in 10 s windows:", "",
              "| window | competitor | decode | prefill-bearing |", "|---|---|---|---|"] + windows
    lines += ["", f"The server's own rolling error (/v1/status: its last {ROLLING} iterations within {ROLLING_S:g} s), each "
              "second after "
              "each change:", ""] + final["settle"]
    report = "\n".join(lines)
    print(report)
    if args.output:
        with open(args.output, "a") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
