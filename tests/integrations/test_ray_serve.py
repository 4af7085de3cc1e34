"""Scale-out on a local Ray cluster: two engine replicas (tiny model) behind the SLO-aware router.

Skips when Ray Serve is not installed (it is an optional extra). One cluster for the module: starting Ray
and two replicas takes ~40 s on two cores.
"""
from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow

import httpx  # noqa: E402

from sliceserve.core.latency import LatencyModel  # noqa: E402

CLASSES = ("realtime", "interactive", "batch", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tiny_llama_dir, tmp_path_factory):
    import ray

    from sliceserve.integrations.ray import launch
    from sliceserve.integrations.ray.config import split_settings

    profile = tmp_path_factory.mktemp("ray") / "latency.json"
    LatencyModel([0.002, 0.0025, 0.003, 0.0035], prefill_base_s=0.001, prefill_per_token_s=1e-5,
                 name="tiny-test").save(profile)
    ray_settings, engine_settings = split_settings({
        "model": str(tiny_llama_dir), "served_model_name": "tiny", "policy": "slice",
        "latency_profile": str(profile), "kv_cache_memory_bytes": 8 << 20, "max_model_len": 512,
        "num_threads": 1, "slo_scale": 20, "log_level": "warning",
        "ray": {"replicas": 2, "http_port": _free_port(), "stats_period_s": 0.1}})
    url = launch.start(engine_settings, ray_settings, num_cpus=2)
    try:
        yield url
    finally:
        launch.stop()
        assert not ray.is_initialized()


def _body(cls: str | None, max_tokens: int, stream: bool, chat: bool) -> dict:
    body: dict = {"max_tokens": max_tokens, "stream": stream, "ignore_eos": True, "temperature": 0}
    if chat:
        body["messages"] = [{"role": "user", "content": "Tell me about edge devices."}]
    else:
        body["prompt"] = "The quick brown fox"
    if cls is not None:
        body["slo_class"] = cls
    return body


def _call(url: str, body: dict, chat: bool) -> dict:
    """One request to its end: status, parsed outcome. Never raises for an HTTP-level failure."""
    path = "/v1/chat/completions" if chat else "/v1/completions"
    with httpx.Client(timeout=120) as client:
        if not body["stream"]:
            r = client.post(url + path, json=body)
            return {"status": r.status_code, "json": r.json()}
        events, done = [], False
        with client.stream("POST", url + path, json=body) as r:
            if r.status_code != 200:
                return {"status": r.status_code, "json": json.loads(r.read())}
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                events.append(json.loads(line[6:]))
        return {"status": 200, "events": events, "done": done}


def _outcome(res: dict, max_tokens: int) -> str:
    """'ok' (complete output), 'error' (an explicit error), or a description of what went wrong."""
    if res["status"] != 200:
        return "error" if "error" in res.get("json", {}) else f"bad {res}"
    if "json" in res:
        ok = res["json"]["usage"]["completion_tokens"] == max_tokens
        return "ok" if ok else f"short {res['json']['usage']}"
    if not res["done"]:
        return "stream ended without [DONE]"
    if any("error" in e for e in res["events"]):
        return "error"
    reasons = [c["finish_reason"] for e in res["events"] for c in e.get("choices", []) if c.get("finish_reason")]
    return "ok" if reasons == ["length"] else f"stream without finish_reason: {res['events'][-1:]}"


def test_every_class_completes_through_the_router(cluster):
    jobs = [(cls, stream, chat) for cls in CLASSES for stream in (False, True) for chat in (False, True)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda j: _call(cluster, _body(j[0], 12, j[1], j[2]), j[2]), jobs))
    for (cls, stream, chat), res in zip(jobs, results):
        assert _outcome(res, 12) == "ok", (cls, stream, chat, res)
        if not stream:
            assert res["json"]["slo_report"]["slo_class"] == (cls or "default")
            assert res["json"]["model"] == "tiny"
    # The rest of the single-box API comes through the ingress unchanged.
    models = httpx.get(cluster + "/v1/models", timeout=30).json()
    assert models["data"][0]["id"] == "tiny"
    bad = httpx.post(cluster + "/v1/completions", json={"prompt": "x", "slo_class": "nope"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_slo_class"


def _engine_replicas() -> list:
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("SERVE_REPLICA::") and "EngineReplica" in a["name"]]
    return [ray.get_actor(n, namespace="serve") for n in names]


def _unfinished(actor) -> int:
    import ray

    stats = ray.get(actor.record_routing_stats.remote(), timeout=10)
    return len(stats["load"]["work"])


def test_killing_a_replica_mid_run_loses_no_accepted_request(cluster):
    import ray

    max_tokens = 300
    jobs = [(CLASSES[i % 4], i % 2 == 1, i % 3 == 0) for i in range(12)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(_call, cluster, _body(cls, max_tokens, stream, chat), chat)
                   for cls, stream, chat in jobs]
        # Wait until both replicas hold work, then kill the busier one.
        deadline, victim, held = time.monotonic() + 30, None, 0
        while time.monotonic() < deadline:
            loads = [(_unfinished(a), a) for a in _engine_replicas()]
            if len(loads) == 2 and all(n > 0 for n, _ in loads):
                held, victim = max(loads, key=lambda x: x[0])
                break
            time.sleep(0.05)
        assert victim is not None, "requests never spread over both replicas"
        ray.kill(victim, no_restart=True)
        results = [f.result(timeout=180) for f in futures]
    outcomes = [_outcome(r, max_tokens) for r in results]
    assert all(o in ("ok", "error") for o in outcomes), outcomes
    # A plain response sends nothing before it is complete, so a dead replica's plain requests are all resent
    # and complete; only a stream that already sent tokens may end in an (explicit) error.
    for (cls, stream, chat), res, outcome in zip(jobs, results, outcomes):
        if not stream:
            assert outcome == "ok", (cls, chat, res)
        elif outcome == "error":
            assert res["events"][-1]["error"]["code"] == "replica_failed"
    assert held > 0 and outcomes.count("ok") >= len(jobs) - held
    # The application keeps serving (the survivor, then Serve's replacement replica).
    after = _call(cluster, _body("interactive", 8, False, False), False)
    assert _outcome(after, 8) == "ok"
