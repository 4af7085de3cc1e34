"""The SLO-aware ranking (pure, no Ray): predictions from load snapshots, real-time first, fallbacks."""
from __future__ import annotations

import json

import pytest

from sliceserve.core.latency import LatencyModel
from sliceserve.integrations.ray.hints import hint_from_request
from sliceserve.integrations.ray.routing import ReplicaLoad, RequestHint, WorkItem, predict, rank
from sliceserve.slo import SLO, SLOClass

# 50 ms per step alone, +10 ms per extra sequence; prefill 10 ms + 0.1 ms/token.
LAT = LatencyModel([0.05 + 0.01 * i for i in range(16)], prefill_base_s=0.01, prefill_per_token_s=1e-4)
CLASSES = {"realtime": SLOClass("realtime", SLO(ttft_s=0.5, tpot_s=0.08), 100.0),
           "interactive": SLOClass("interactive", SLO(ttft_s=2.0, tpot_s=0.2), 1.0),
           "batch": SLOClass("batch", SLO(e2e_s=60.0), 1.0)}


def load(work=(), policy="slice", taken_at=0.0, **kw) -> ReplicaLoad:
    return ReplicaLoad(taken_at, LAT.copy(), kw.pop("max_num_seqs", 16), kw.pop("max_num_batched_tokens", 512),
                       policy, list(work), classes=dict(CLASSES), **kw)


def running(n, utility=1.0, tpot=None):
    return [WorkItem(utility, tpot, 0, True) for _ in range(n)]


def waiting(n, tokens, utility=1.0):
    return [WorkItem(utility, None, tokens, False) for _ in range(n)]


def test_prediction_grows_with_load():
    hint = RequestHint("interactive", prompt_tokens=100, max_tokens=20)
    idle, busy = predict(load(), [], hint), predict(load(running(8) + waiting(4, 400)), [], hint)
    assert idle.ttft_s == pytest.approx(LAT.prefill_time(100))
    assert idle.tpot_s == pytest.approx(LAT.decode_time(1))
    assert busy.ttft_s > idle.ttft_s and busy.tpot_s > idle.tpot_s
    assert busy.tpot_s == pytest.approx(LAT.decode_time(13))   # 8 running + 4 waiting + itself
    assert idle.risk < 1.0 and busy.load == 12


def test_picks_replica_that_meets_slo_and_least_risky_first():
    hint = RequestHint("interactive", prompt_tokens=50, max_tokens=10)
    loads = {"a": load(running(14)), "b": load(running(2)), "c": load(running(6))}
    assert rank(loads, {}, {}, hint) == ["b", "c", "a"]


def test_realtime_sees_only_higher_or_equal_utility_work_under_slice_but_all_under_fcfs():
    rt = RequestHint("realtime", prompt_tokens=20, max_tokens=5)
    queue = waiting(6, 1000)             # a deep queue of low-utility prompts
    slice_ = predict(load(queue), [], rt)
    fcfs = predict(load(queue, policy="vllm"), [], rt)
    assert slice_.ttft_s == pytest.approx(LAT.prefill_time(20))
    assert fcfs.ttft_s > 0.5 > slice_.ttft_s


def test_low_utility_request_avoids_replica_where_it_would_break_realtime_tpot():
    # Replica a runs 3 real-time requests at 70 ms/step under their 75 ms bound; a 4th member makes it 80 ms.
    a = load(running(3, utility=100.0, tpot=0.075))     # l(3)=70 ms meets 75 ms; l(4)=80 ms would not
    b = load(running(5))                                 # more loaded, but nobody there to harm
    hint = RequestHint("interactive", prompt_tokens=10, max_tokens=10)
    assert predict(a, [], hint).harm and not predict(b, [], hint).harm
    assert rank({"a": a, "b": b}, {}, {}, hint) == ["b", "a"]
    # A real-time request of its own is not "harm" to its peers of equal utility: it goes to the lighter one.
    rt = RequestHint("realtime", prompt_tokens=10, max_tokens=5, slo=SLO(tpot_s=0.2))
    assert not predict(a, [], rt).harm
    assert rank({"a": a, "b": b}, {}, {}, rt) == ["a", "b"]


def test_requests_routed_since_the_snapshot_count_as_load():
    hint = RequestHint("interactive", prompt_tokens=50, max_tokens=10)
    loads = {"a": load(), "b": load()}
    burst = [RequestHint("interactive", prompt_tokens=50).as_work(CLASSES)] * 5
    assert rank(loads, {"a": burst}, {"a": 5}, hint) == ["b", "a"]
    assert rank(loads, {"b": burst}, {"b": 5}, hint) == ["a", "b"]


def test_fallbacks_no_slo_infeasible_and_unknown_replicas_go_least_loaded():
    no_slo = RequestHint(None, prompt_tokens=10)
    loads = {"a": load(running(5)), "b": load(running(1)), "new": None}
    assert rank(loads, {}, {}, no_slo)[:2] == ["b", "a"] and rank(loads, {}, {}, no_slo)[-1] == "new"
    impossible = RequestHint(None, SLO(tpot_s=0.001), prompt_tokens=10)
    assert rank({"a": load(running(5)), "b": load(running(1))}, {}, {}, impossible) == ["b", "a"]
    # A replica that is not ready comes last even when idle.
    assert rank({"a": load(ready=False), "b": load(running(3))}, {}, {}, no_slo) == ["b", "a"]


def test_full_slots_add_waiting_for_a_free_slot():
    hint = RequestHint("interactive", prompt_tokens=10, max_tokens=10)
    full = load(running(4), max_num_seqs=4, running_remaining_mean=50.0)
    free = load(running(3), max_num_seqs=4, running_remaining_mean=50.0)
    assert predict(full, [], hint).ttft_s > predict(free, [], hint).ttft_s + 1.0


def test_snapshot_round_trips_through_plain_data():
    ld = load(running(2, 100.0, 0.05) + waiting(1, 30), running_ctx_mean=12.5, running_remaining_mean=3.0)
    back = ReplicaLoad.from_dict(json.loads(json.dumps(ld.to_dict())))
    assert back.work == ld.work and back.classes == ld.classes and back.latency.to_dict() == ld.latency.to_dict()
    assert (back.running_ctx_mean, back.running_remaining_mean, back.policy) == (12.5, 3.0, "slice")


def test_hints_follow_the_servers_precedence_body_over_headers_over_class():
    body = json.dumps({"prompt": "x" * 400, "max_tokens": 7, "slo_class": "interactive",
                       "slo": {"tpot_ms": 300}, "utility": 5}).encode()
    hint = hint_from_request(body, {"x-slo-tpot-ms": "100", "x-slo-ttft-ms": "900"})
    slo, utility = hint.resolve(CLASSES)
    assert (slo.ttft_s, slo.tpot_s, slo.e2e_s, utility) == (0.9, 0.3, None, 5.0)
    assert hint.prompt_tokens == 100 and hint.max_tokens == 7
    ids = hint_from_request(json.dumps({"prompt": list(range(33))}).encode(), {})
    assert ids.prompt_tokens == 33 and ids.max_tokens == 16 and ids.resolve(CLASSES) == (SLO(), 1.0)
    chat = hint_from_request(json.dumps({"messages": [{"role": "user", "content": "y" * 80}]}).encode(), {})
    assert chat.prompt_tokens == 20 + 4 and chat.max_tokens == 256
    junk = hint_from_request(b"{not json", {"x-slo-tpot-ms": "bad"})   # the replica answers it with a 400
    assert (junk.slo, junk.slo_class, junk.utility, junk.prompt_tokens) == (SLO(), None, None, 1)


def test_hint_reads_slo_text_from_body_and_header_as_the_server_does():
    body = json.dumps({"prompt": "x" * 40, "slo": "tpot <= 300ms, e2e <= 9s"}).encode()
    hint = hint_from_request(body, {"x-slo": "ttft <= 900ms, tpot <= 100ms"})
    assert hint.slo == SLO(ttft_s=0.9, tpot_s=0.3, e2e_s=9.0)            # body over header, per bound
    odd = hint_from_request(json.dumps({"prompt": "x", "slo": "p99 ttft <= 1s"}).encode(), {"x-slo": "soon"})
    assert odd.slo == SLO()                      # no request-scope bound: the replica answers the 400
