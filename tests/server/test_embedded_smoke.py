"""Smoke test: `sliceserve serve` (as `make serve` runs it) starts on the embedded model and answers."""
from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.server.helpers import free_port, wait_until_serving


@pytest.mark.slow
def test_serve_embedded_model_answers_models_and_chat(tmp_path):
    pytest.importorskip("torch")
    from sliceserve.model.loader import default_model_path

    try:
        default_model_path()
    except ValueError as exc:
        pytest.skip(str(exc))
    port = free_port()
    # A saved latency profile would skip the start-up measurement; the default (measure) is what make serve does.
    cmd = [sys.executable, "-m", "sliceserve", "serve", "--port", str(port), "--max-model-len", "1024",
           "--log-level", "warning"]
    env = {**os.environ, "SLICESERVE_MAX_WAITING": "8"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, url, 240)
        models = httpx.get(url + "/v1/models").json()["data"]
        assert models[0]["id"].startswith("SmolLM2-135M")
        assert httpx.get(url + "/ready").json()["policy"] == "slice"
        import openai

        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
        resp = client.chat.completions.create(model=models[0]["id"], max_tokens=4, temperature=0,
                                              messages=[{"role": "user", "content": "Say hi."}],
                                              extra_body={"slo": {"ttft_ms": 60000, "tpot_ms": 5000}})
        assert resp.usage.completion_tokens >= 1 and resp.choices[0].finish_reason in ("stop", "length")
        assert resp.model_extra["slo_report"]["met"] is True
    finally:
        proc.terminate()
        proc.wait(20)
