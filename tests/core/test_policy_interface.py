"""The policy interface (core/policies/interface.py): policies are found by `@register` alone, and each
declares what the server, the router and the controller need, so those layers list no policy names."""
from __future__ import annotations

import sys
import textwrap

import pytest

import sliceserve.core.policies as policies
from sliceserve.config import SchedulerConfig
from sliceserve.control import knobs
from sliceserve.core.latency import load_profile
from sliceserve.core.policies import available_policies, make_scheduler, policy_class, register
from sliceserve.core.policies.interface import Policy
from sliceserve.core.scheduler import Batch
from sliceserve.integrations.ray.routing import ReplicaLoad, RequestHint, WorkItem, predict
from sliceserve.server.admission import estimate_under_load
from sliceserve.slo import SLO, SLOClass
from tests.core.schedhelpers import make_request


def _sched(policy: str):
    return make_scheduler(policy, SchedulerConfig(policy=policy), load_profile("paper-4060ti"))


def test_every_module_of_the_package_is_discovered_without_a_list(tmp_path, monkeypatch):
    # A new module dropped into the package appears by its decorator alone.
    available_policies()   # load the real ones first: the patched registry below starts from them
    pkg_dir = policies.__path__[0]
    name = "zz_test_extra_policy"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent("""
        from sliceserve.core.policies import register
        from sliceserve.core.policies.interface import Policy
        from sliceserve.core.scheduler import Batch

        @register("zz-extra")
        class Extra(Policy):
            def plan(self, now):
                return Batch()
    """))
    monkeypatch.setattr(policies, "__path__", [pkg_dir, str(tmp_path)])
    monkeypatch.setattr(policies, "_loaded", False)
    monkeypatch.setattr(policies, "_REGISTRY", dict(policies._REGISTRY))
    try:
        assert "zz-extra" in available_policies()
        assert {"slice", "orca", "sliding", "scorpio", "qoserve"} <= set(available_policies())
    finally:
        sys.modules.pop(f"sliceserve.core.policies.{name}", None)


def test_register_accepts_only_policies_and_one_class_per_name(monkeypatch):
    available_policies()
    monkeypatch.setattr(policies, "_REGISTRY", dict(policies._REGISTRY))
    with pytest.raises(TypeError, match="must subclass"):
        register("not-a-policy")(object)    # type: ignore[type-var]

    class Other(Policy):
        def plan(self, now: float) -> Batch:
            return Batch()
    with pytest.raises(ValueError, match="registered twice"):
        register("slice")(Other)


def test_utility_ordering_is_declared_by_the_policy():
    assert policy_class("slice").orders_by_utility
    assert not any(policy_class(n).orders_by_utility for n in available_policies() if n != "slice")


@pytest.mark.parametrize("policy", ["slice", "orca"])
def test_admission_estimate_follows_the_declaration(policy, monkeypatch):
    """A real-time request queues only behind the work the policy declares it serves first (SLICE: its
    `admission_key`; a policy that only declares `orders_by_utility`: work of at least its utility);
    without either declaration (nothing else changed) everything admitted counts as ahead."""
    sched = _sched(policy)
    for i in range(6):
        low = make_request(f"low{i}", 256, 32, slo=SLO(ttft_s=5.0))
        low.utility = 1.0
        sched.add_request(low, 0.0)
    rt = make_request("rt", 32, 16, slo=SLO(ttft_s=0.5, tpot_s=0.05))
    rt.utility = 100.0
    declared = estimate_under_load(sched, rt).ttft_s
    cls = type(sched)
    monkeypatch.setattr(cls, "admission_key", lambda self, req: None)
    monkeypatch.setattr(cls, "orders_by_utility", False)
    fcfs = estimate_under_load(sched, rt).ttft_s
    monkeypatch.setattr(cls, "orders_by_utility", True)
    by_utility = estimate_under_load(sched, rt).ttft_s
    assert by_utility < fcfs
    assert (declared < fcfs) == (policy == "slice")


def test_router_reads_the_declaration_by_policy_name():
    lat = load_profile("paper-4060ti")
    queue = [WorkItem(1.0, None, 256, False) for _ in range(6)]
    classes = {"realtime": SLOClass("realtime", SLO(0.5, 0.05, None), 100.0)}
    hint = RequestHint(prompt_tokens=32, slo_class="realtime")
    by_utility = predict(ReplicaLoad(0.0, lat, 16, 512, "slice", queue, classes=classes), [], hint)
    fcfs = predict(ReplicaLoad(0.0, lat, 16, 512, "orca", queue, classes=classes), [], hint)
    assert by_utility.ttft_s < fcfs.ttft_s
    with pytest.raises(ValueError, match="unknown policy"):
        predict(ReplicaLoad(0.0, lat, 16, 512, "nope", queue, classes=classes), [], hint)


def test_slice_knobs_are_declared_with_bounds_and_applied():
    sched = _sched("slice")
    assert {k.name for k in sched.knobs} == {"max_num_seqs", "margin", "rate_boost"}
    assert knobs.set_margin(sched, 0.2) and knobs.get_margin(sched) == 0.2
    assert sched.cap_s == pytest.approx(sched.period_s * 0.8)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="knob margin must be in"):
            knobs.set_margin(sched, bad)
    assert knobs.get_margin(sched) == 0.2
    assert knobs.boost(sched, "a", max_boost=2) and knobs.boost(sched, "a", max_boost=2)
    assert not knobs.boost(sched, "a", max_boost=2)
    assert sched.get_knob("rate_boost", "a") == 2
    with pytest.raises(ValueError, match="per request"):
        sched.set_knob("rate_boost", 1)
    knobs.set_batch_cap(sched, 3)
    assert sched.config.max_num_seqs == 3 and sched.params.max_num_seqs == 3
    with pytest.raises(ValueError, match="integer"):
        sched.set_knob("max_num_seqs", 2.5)
    with pytest.raises(ValueError):
        knobs.set_batch_cap(sched, 0)


def test_a_knob_a_policy_lacks_is_unsupported_not_faked():
    sched = _sched("orca")
    assert knobs.get_margin(sched) is None
    assert not knobs.set_margin(sched, 0.1)
    assert not knobs.boost(sched, "a", max_boost=4)
    with pytest.raises(KeyError, match="has no knob 'margin'"):
        sched.set_knob("margin", 0.1)
    knobs.set_batch_cap(sched, 4)       # every policy has the batch cap
    assert knobs.get_batch_cap(sched) == 4
