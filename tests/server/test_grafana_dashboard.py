"""docs/grafana/sliceserve.json imports as is and every PromQL expression in it names metrics that a real
server's /metrics exports (scraped here after a little traffic), with labels those metrics carry."""
from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.server.helpers import LiveServer, make_state

promql = pytest.importorskip("promql_parser", reason="promql-parser (test extra) is not installed")

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "sliceserve.json"
# Grafana's own variables, replaced by what they stand for at query time so the expression parses.
_GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Labels Prometheus adds at scrape time, and the histogram bucket label.
_SCRAPE_LABELS = {"instance", "job", "le", "__name__"}


def _targets(dash: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out.append((panel["title"], t["expr"]))
        out += _targets(panel) if "panels" in panel else []
    return out


def _substitute(expr: str, variables: list[str]) -> str:
    for var, value in _GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    for name in variables:
        expr = re.sub(rf"\$\{{{name}\}}|\${name}\b", ".*", expr)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def _selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every vector selector in the expression."""
    found: list[tuple[str, set[str]]] = []

    def visit(node) -> None:
        if isinstance(node, promql.VectorSelector):
            labels = {m.name for m in node.matchers.matchers}
            found.append((node.name, labels))

    promql.walk(promql.parse(expr), visit)
    return found


def _grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in re.findall(r"\bby\s*\(([^)]*)\)", expr) for label in group.split(",")
            if label.strip()}


def _exported(text: str) -> dict[str, set[str] | None]:
    """Sample name -> label names, from the exposition text. Families without samples yet (a labelled metric
    no request has touched) still count, with their sample names derived from their type and labels None
    (the text does not say them)."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""],
                "summary": ["_sum", "_count", ""]}
    out: dict[str, set[str] | None] = {}
    for fam in text_string_to_metric_families(text):
        for suffix in suffixes.get(fam.type, [""]):
            out.setdefault(fam.name + suffix, None)
        for s in fam.samples:
            out[s.name] = (out[s.name] or set()) | set(s.labels)
    return out


# Series that only a controller cycle predicting a miss creates: their labels cannot be read off a scrape.
_UNSAMPLED_OK = {"sliceserve:slo_predicted_miss_total"}


@pytest.fixture(scope="module")
def exported(tiny_loaded_factory) -> dict[str, set[str] | None]:
    """Traffic that touches every labelled series it can: two classes, a refusal (a TTFT bound no device
    meets, 400) and a miss (an e2e bound just above the model's prefill, so admitted, but 16 tokens take
    longer)."""
    state = make_state(tiny_loaded_factory(), policy="slice")
    e2e_ms = 1.2e3 * state.engine.core.scheduler.latency.prefill_time(32)
    with LiveServer(state) as live:
        for cls, slo in (("realtime", None), ("batch", None), ("realtime", {"ttft_ms": 0.001}),
                         ("interactive", {"e2e_ms": e2e_ms})):
            body = {"model": "tiny", "prompt": "metrics please", "max_tokens": 16, "ignore_eos": True,
                    "slo_class": cls}
            if slo:
                body["slo"] = slo
            httpx.post(live.url + "/v1/completions", json=body, timeout=60)
        return _exported(httpx.get(live.url + "/metrics").text)


def test_dashboard_is_importable_as_is():
    dash = json.loads(DASHBOARD.read_text())
    inputs = {i["name"]: i for i in dash["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus" and inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30 and dash["id"] is None
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        # Every query goes to the data source chosen at import, never to one named in this file.
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_every_expression_names_an_exported_metric(exported):
    dash = json.loads(DASHBOARD.read_text())
    variables = [v["name"] for v in dash["templating"]["list"]]
    targets = _targets(dash)
    assert len(targets) >= 15
    used: set[str] = set()
    for title, raw in targets:
        expr = _substitute(raw, variables)
        selectors = _selectors(expr)
        assert selectors, f"{title}: {raw!r} selects no metric"
        for name, labels in selectors:
            assert name in exported, f"{title}: {name!r} is not exported by /metrics"
            used.add(name)
            if exported[name] is None:
                assert name in _UNSAMPLED_OK, f"{title}: {name} has no samples after the traffic; labels unchecked"
                continue
            known = exported[name] | _SCRAPE_LABELS
            assert labels <= known, f"{title}: {name} has no label {sorted(labels - known)}"
        for label in _grouping_labels(expr):
            assert any(exported[n] is None or label in exported[n] | _SCRAPE_LABELS for n, _ in selectors), (
                f"{title}: no metric in it has the label {label!r} it groups by")
    for var in dash["templating"]["list"]:
        for name, _ in _selectors(re.sub(r"label_values\((.*),\s*\w+\)", r"\1", var["query"]["query"])):
            assert name in exported, f"variable {var['name']}: {name!r} is not exported"
    # The panels the issue asks for are there: attainment per class, latency quantiles, queues, KV, risk.
    for needed in ("sliceserve:slo_attainment", "vllm:time_to_first_token_seconds_bucket",
                   "vllm:request_time_per_output_token_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
                   "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                   "sliceserve:slo_violation_risk"):
        assert needed in used, needed


def test_checker_catches_a_wrong_name(exported):
    """The check above can fail: a misspelt metric or label is reported."""
    assert "vllm:time_to_first_token_seconds" not in exported   # a histogram's name alone is no series
    name, labels = _selectors(_substitute('rate(vllm:num_request_running{model="x"}[$__rate_interval])', []))[0]
    assert name not in exported
    assert not labels <= exported["vllm:num_requests_running"] | _SCRAPE_LABELS
