"""Server settings of the control package: controller switch and bounds, class and server SLO expressions,
memory limit and prefix caching, from the file, the environment and the command line; and their effect on a
live server (prefix-cache counters on /metrics, controller state on /v1/status)."""
from __future__ import annotations

import httpx
import pytest

from sliceserve.cli import main
from sliceserve.server.settings import load_settings


def _file(tmp_path, text: str) -> str:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(text)
    return str(cfg)


def test_controller_bounds_from_file_switch_from_env_and_cli(tmp_path):
    cfg = _file(tmp_path, "controller: {every: 8, margin_max: 0.2, max_boost: 2}\n")
    s = load_settings({}, config_file=cfg, environ={"SLICESERVE_CONTROLLER_ENABLED": "false"})
    c = s.controller.to_config()
    assert (c.enabled, c.every, c.margin_max, c.max_boost) == (False, 8, 0.2, 2)   # env kept the file's bounds
    assert load_settings({"controller_enabled": False}, environ={}).controller.enabled is False
    on = load_settings({}, config_file=cfg, environ={})
    assert on.controller.enabled is True and on.enable_prefix_caching is True   # defaults
    js = load_settings({}, environ={"SLICESERVE_CONTROLLER": '{"every": 4}'})
    assert js.controller.every == 4


@pytest.mark.parametrize("text,env,needle", [
    ("controller: {every: 0}\n", {}, "controller.every"),
    ("controller: {margin_min: 0.4, margin_max: 0.2}\n", {}, "margin_min"),
    ("controller: {speed: 3}\n", {}, "controller.speed"),
    ("", {"SLICESERVE_CONTROLLER_ENABLED": "maybe"}, "controller.enabled"),
    ("slo_classes: {gold: {slo: 'p99 ttft <= fast'}}\n", {}, "cannot parse SLO term"),
    ("slo_classes: {gold: {slo: 'memory <= 1GB'}}\n", {}, "resource of the whole server"),
    ("slo_classes: {gold: {ttft_ms: 100, slo: 'ttft <= 200ms'}}\n", {}, "ttft is set twice"),
    ("server_slo: 'p99 ttft <= 1s'\n", {}, "put latency and throughput targets on a class"),
    ("server_slo: 'power <= 15'\n", {}, "no unit"),
    ("memory_limit: lots\n", {}, "memory_limit 'lots'"),
    ("memory_limit: 1GB\nserver_slo: 'memory <= 2GB'\n", {}, "memory limit given twice"),
])
def test_bad_control_settings_say_what_to_fix(tmp_path, text, env, needle):
    with pytest.raises(ValueError, match=needle):
        load_settings({}, config_file=_file(tmp_path, text), environ=env)


def test_class_and_server_slo_expressions(tmp_path):
    cfg = _file(tmp_path, "slo_scale: 2\nslo_classes:\n"
                "  gold: {slo: 'p99 ttft <= 500ms, tpot <= 80ms', utility: 10}\n"
                "  bulk: {e2e_ms: 60000, slo: 'throughput >= 40 tok/s'}\n"
                "server_slo: 'memory <= 2GB, power <= 15W'\n")
    s = load_settings({}, config_file=cfg, environ={})
    gold = s.classes()["gold"]
    assert gold.slo.tpot_s == pytest.approx(0.16) and gold.slo.ttft_s is None and gold.utility == 10
    targets = s.class_targets()
    assert targets["gold"].get("ttft", 99).bound == pytest.approx(1.0)         # percentile bounds scale too
    assert targets["bulk"].get("throughput").bound == pytest.approx(40)        # throughput does not
    assert s.memory_limit_bytes() == 2 * 10**9
    assert s.server_constraints().get("power").bound == pytest.approx(15)
    assert load_settings({"memory_limit": "700MB"}, environ={}).memory_limit_bytes() == 700 * 10**6


def test_class_slo_flags_add_targets_and_classes():
    s = load_settings({"class_slo": ["realtime=p90 tpot <= 300ms", "gold=tpot <= 90ms, p99 ttft <= 2s"]},
                      environ={})
    assert s.classes()["realtime"].slo.tpot_s == pytest.approx(0.05)           # built-in bounds kept
    assert s.class_targets()["realtime"].get("tpot", 90).bound == pytest.approx(0.3)
    assert s.classes()["gold"].slo.tpot_s == pytest.approx(0.09)
    with pytest.raises(ValueError, match="CLASS=EXPR"):
        load_settings({"class_slo": ["p99 ttft <= 1s"]}, environ={})


def test_serve_cli_rejects_bad_slo_flags(capsys):
    assert main(["serve", "--server-slo", "memory <= banana"]) == 2
    assert "memory" in capsys.readouterr().err
    assert main(["serve", "--class-slo", "realtime=p100 ttft <= 1s"]) == 2
    assert "between 0 and 100" in capsys.readouterr().err
    assert main(["serve", "--memory-limit", "-5"]) == 2


def test_live_server_counts_prefix_cache_hits_and_applies_controller_settings(tiny_loaded_factory):
    from prometheus_client.parser import text_string_to_metric_families

    from sliceserve.server.settings_control import ControllerSettings
    from tests.server.helpers import LiveServer, make_state

    state = make_state(tiny_loaded_factory(), controller=ControllerSettings(enabled=False, every=7))
    assert state.engine.core.scheduler.prefix_caching   # on by default for the real engine
    prompt = "A shared system prompt for every request of this edge device, long enough for blocks. " * 3
    with LiveServer(state) as live:
        client = live.openai()
        for _ in range(3):
            client.completions.create(model="tiny", prompt=prompt, max_tokens=2)
        # Own bounds and no class: grouped by utility, so the controller can tell the groups apart.
        hi = client.completions.create(model="tiny", prompt="x", max_tokens=2,
                                       extra_body={"slo": {"e2e_ms": 60000}, "utility": 100})
        lo = client.completions.create(model="tiny", prompt="x", max_tokens=2, extra_body={"slo": {"e2e_ms": 60000}})
        metrics = httpx.get(live.url + "/metrics", timeout=10).text
        status = httpx.get(live.url + "/v1/status", timeout=10).json()
    samples = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    queries, hits = samples["vllm:prefix_cache_queries_total"], samples["vllm:prefix_cache_hits_total"]
    kv = state.engine.core.scheduler.kv
    assert queries == kv.lookup_tokens and hits == kv.hit_tokens and 0 < hits < queries
    assert samples["sliceserve:prefix_cache_hit_rate"] == pytest.approx(hits / queries)
    assert status["prefix_cache"]["hit_rate"] == pytest.approx(hits / queries)
    assert status["controller"]["enabled"] is False and status["controller"]["every_iterations"] == 7
    assert hi.model_extra["slo_report"]["slo_class"] == "custom-u100"
    assert lo.model_extra["slo_report"]["slo_class"] == "custom"
    assert {"custom", "custom-u100"} <= set(status["classes"])
