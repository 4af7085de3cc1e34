"""`sliceserve bench --url URL`: replay a workload against a running server over HTTP, streaming, like
`vllm bench serve`; results in the same JSON shape and table as `simulate` / `bench --engine local`.

Every request is sent at its workload arrival time (an open loop: a slow server does not slow the
arrivals) with its class's SLO in the body. Times are taken on this client: TTFT = first content chunk,
E2E = end of the stream, TPOT from the first and last chunk and the server's usage count. When the server
coalesced several tokens into one chunk, the per-token times in between are interpolated (ITL is then an
approximation; TTFT, TPOT and E2E are exact).

--goodput follows vLLM bench: a request is "good" if it completed and each given bound (ttft, tpot, e2el,
in ms) holds; request_goodput = good requests / benchmark duration.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx
import numpy as np

from sliceserve.bench.device_scale import DeviceScale, device_scale, latency_scale
from sliceserve.bench.local import synthetic_requests
from sliceserve.core.latency import BUILTIN_PROFILES, load_profile
from sliceserve.core.scheduler import Scheduler
from sliceserve.metrics import makespan_s, request_metrics, summarize, summarize_by_class
from sliceserve.request import FinishReason, Request
from sliceserve.slo import parse_slo

_GOODPUT_KEYS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2el": "e2e_s"}


def parse_goodput(items: list[str] | None) -> dict[str, float]:
    """['ttft:500', 'tpot:50'] -> {'ttft': 0.5, 'tpot': 0.05} (seconds). vLLM's spelling, read as the SLO
    grammar's per-request term (`ttft:500` is `ttft <= 500ms`)."""
    out: dict[str, float] = {}
    for item in items or []:
        key, _, value = item.partition(":")
        if key not in _GOODPUT_KEYS:
            raise ValueError(f"--goodput {item!r}: metric must be one of {', '.join(_GOODPUT_KEYS)} (e.g. ttft:500)")
        metric = _GOODPUT_KEYS[key].removesuffix("_s")
        try:
            (term,) = parse_slo(f"{metric} <= {value.strip()}ms", scope="request")
        except ValueError as exc:
            raise ValueError(f"--goodput {item!r}: write {key}:MS, a positive number of milliseconds ({exc})") from None
        out[key] = term.bound
    return out


def _server_info(url: str) -> dict[str, Any]:
    try:
        models = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]
        ready = httpx.get(f"{url}/ready", timeout=10)
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"cannot reach a sliceserve server at {url}: {exc}") from None
    info = ready.json() if ready.headers.get("content-type", "").startswith("application/json") else {}
    return {"model": models["id"], "max_model_len": models.get("max_model_len", 2048),
            "vocab_size": models.get("vocab_size", 32000), "policy": info.get("policy", "unknown"),
            "decode_l1_s": info.get("decode_l1_s"), "prefill_256_s": info.get("prefill_256_s")}


def _chosen_scale(args: argparse.Namespace) -> DeviceScale:
    """The SLO scale a server is graded by: the user's factors, or a pinned profile's (a file from `sliceserve
    profile`, or a built-in name). Never the server's own live estimate: an inflated estimate would loosen the
    bounds it is graded by (the server would grade itself)."""
    if args.slo_scale is None and args.profile is None:
        raise ValueError("bench --url needs the SLO scale from you: pass --slo-scale (and --ttft-scale), or "
                         "--profile with a pinned latency profile of the device (a `sliceserve profile` file or a "
                         f"built-in name: {', '.join(BUILTIN_PROFILES)}); the server's own estimate is never used")
    if args.slo_scale is not None:
        return device_scale(None, None, slo_scale=args.slo_scale, ttft_scale=args.ttft_scale)
    scale = latency_scale(load_profile(args.profile), ttft_scale=args.ttft_scale)
    return DeviceScale(scale.slo, scale.ttft, f"{scale.rule}, from profile {args.profile}")


def _body(req: Request, model: str) -> dict[str, Any]:
    ms = lambda v: None if v is None else v * 1e3  # noqa: E731
    return {"model": model, "prompt": req.prompt_token_ids, "max_tokens": req.max_tokens, "ignore_eos": True,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            # The workload's classes need not exist on the server: send their bounds, keep the name here.
            "utility": req.utility,
            "slo": {"ttft_ms": ms(req.slo.ttft_s), "tpot_ms": ms(req.slo.tpot_s), "e2e_ms": ms(req.slo.e2e_s)}}


def _end(req: Request, reason: FinishReason, now: float, error: str | None = None) -> None:
    Scheduler.end_unadmitted(req, reason, now, error)   # the server's outcome, recorded on the client's copy


def _fill_tokens(req: Request, chunk_times: list[float], n: int) -> None:
    """n output tokens whose times are the chunk times (exact when one token per chunk), else interpolated
    between the first and last chunk."""
    req.output_token_ids = [0] * n
    if n == 0 or not chunk_times:
        return
    if len(chunk_times) == n:
        req.token_times_s = list(chunk_times)
    else:
        req.token_times_s = np.linspace(chunk_times[0], chunk_times[-1], n).tolist() if n > 1 else [chunk_times[0]]


def http_error(status: int, body: str) -> str:
    """The request's error from a non-200 answer: the server's own message whole (an SLO refusal names the
    prediction's parts, which a benchmark reads back: live_fidelity.py's request file), else the body's start."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body[:200]}"
    return f"HTTP {status}: {message}"


def _take_predictions(req: Request, report: dict[str, Any]) -> None:
    sec = lambda ms: None if ms is None else ms / 1e3  # noqa: E731
    req.predicted_ttft_s, req.predicted_tpot_s = sec(report.get("predicted_ttft_ms")), sec(report.get("predicted_tpot_ms"))


# In-stream error codes that are the server refusing (server/serving.py `_failure`), not failing.
_REFUSAL_CODES = ("queue_timeout", "slo_infeasible")


async def _send(client: httpx.AsyncClient, req: Request, model: str, t0: float) -> None:
    clock = lambda: time.monotonic() - t0  # noqa: E731
    chunk_times: list[float] = []
    usage, reason = 0, None
    try:
        async with client.stream("POST", "/v1/completions", json=_body(req, model)) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                kind = FinishReason.REJECTED if r.status_code in (400, 429, 503) else FinishReason.ERROR
                return _end(req, kind, clock(), http_error(r.status_code, text))
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    # The server refusing mid-stream (its queue time limit, or the policy once the stream's SLO is
                    # lost: SLICE's slice_drop_lost) is a refusal, as its 429 or 503 before the stream is; other
                    # errors are failures.
                    code = data["error"].get("code")
                    kind = FinishReason.REJECTED if code in _REFUSAL_CODES else FinishReason.ERROR
                    return _end(req, kind, clock(), data["error"].get("message"))
                if data.get("usage"):
                    usage = data["usage"]["completion_tokens"]
                if data.get("slo_report"):   # the server's admission-time predictions, to audit its model
                    _take_predictions(req, data["slo_report"])
                for choice in data.get("choices", []):
                    if choice.get("text"):
                        chunk_times.append(clock())
                    reason = choice.get("finish_reason") or reason
        # Tokens that decode to no text send no chunk: with none at all, the stream's end times them.
        if usage and not chunk_times:
            chunk_times.append(clock())
        _fill_tokens(req, chunk_times, usage)
        _end(req, FinishReason.STOP if reason == "stop" else FinishReason.LENGTH, clock())
    except asyncio.CancelledError:
        _end(req, FinishReason.ABORT, clock(), "cut off by --max-time")
    except httpx.HTTPError as exc:
        _end(req, FinishReason.ERROR, clock(), f"{type(exc).__name__}: {exc}")


async def replay(url: str, reqs: list[Request], model: str, max_time_s: float, progress: bool) -> float:
    from sliceserve.bench.progress import progress as progress_bar

    bar = progress_bar(len(reqs), "requests", "requests", enabled=progress)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    timeout = httpx.Timeout(max_time_s, connect=10)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        t0 = time.monotonic()

        async def one(req: Request) -> None:
            await asyncio.sleep(max(0.0, req.arrival_s - (time.monotonic() - t0)))
            await _send(client, req, model, t0)
            bar.update(1)

        tasks = [asyncio.create_task(one(r)) for r in reqs]
        _, late = await asyncio.wait(tasks, timeout=max_time_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for req in reqs:   # never sent before the deadline
            if not req.status.is_finished:
                _end(req, FinishReason.ABORT, time.monotonic() - t0, "cut off by --max-time")
    bar.close()
    return time.monotonic() - t0


def goodput_summary(metrics: list, bounds: dict[str, float], duration_s: float) -> dict[str, Any]:
    good = 0
    for m in metrics:
        if not m.completed:
            continue
        if all(getattr(m, _GOODPUT_KEYS[k]) is None or getattr(m, _GOODPUT_KEYS[k]) <= v for k, v in bounds.items()):
            good += 1
    return {"goodput_slos_ms": {k: v * 1e3 for k, v in bounds.items()}, "num_good": good,
            "request_goodput": good / duration_s if duration_s > 0 else None}


def run_http(args: argparse.Namespace) -> dict:
    """Replay args.workload against args.url; returns {"config", "results": {POLICY: {...}}}."""
    from sliceserve.workload import generate, get_preset, with_slo_overrides

    url = args.url.rstrip("/")
    bounds = parse_goodput(getattr(args, "goodput", None))
    scale = _chosen_scale(args)
    info = _server_info(url)
    mix = with_slo_overrides(get_preset(args.workload, scale.slo, scale.ttft), args.slo)
    workload = generate(args.workload, args.request_rate, args.duration, args.seed, args.burstiness,
                        max_requests=args.max_requests, mix=mix)
    if not workload.specs:
        raise ValueError("the workload has no requests; raise --request-rate or --duration")
    reqs, capped = synthetic_requests(workload, "http", info["vocab_size"], info["max_model_len"], args.seed)
    max_time = args.max_time if args.max_time is not None else 4 * args.duration + 30
    print(f"{len(reqs)} requests of {args.workload} -> {url} ({info['model']}, policy {info['policy']}), "
          f"{scale}", file=sys.stderr)
    wall = asyncio.run(replay(url, reqs, info["model"], max_time, not args.no_progress))
    metrics = [request_metrics(r) for r in reqs]
    span = makespan_s(metrics)
    summary = summarize(metrics, span)
    summary.update(wall_end_s=wall, **(goodput_summary(metrics, bounds, wall) if bounds else {}))
    result: dict[str, Any] = {"summary": summary, "per_class": summarize_by_class(metrics, span, workload.classes)}
    if not args.no_requests:
        result["requests"] = [{**m.to_record(), "error": r.error} for m, r in zip(metrics, reqs)]
    config = {"workload": workload.describe(), "request_rate": args.request_rate, "duration_s": args.duration,
              "burstiness": args.burstiness, "seed": args.seed, "engine": "http", "url": url,
              "server": info, "policies": [info["policy"]], **scale.describe(), "max_time_s": max_time,
              "num_requests_capped_to_max_model_len": capped}
    return {"config": config, "results": {info["policy"]: result}}
