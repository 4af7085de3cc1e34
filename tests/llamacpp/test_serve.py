"""`sliceserve serve --backend llamacpp` starts on the embedded GGUF and answers the OpenAI API."""
from __future__ import annotations

import subprocess
import sys

import httpx

from tests.server.helpers import free_port, wait_until_serving


def test_serve_llamacpp_answers_chat(lcpp):
    port = free_port()
    cmd = [sys.executable, "-m", "sliceserve", "serve", "--backend", "llamacpp", "--port", str(port),
           "--max-model-len", "512", "--max-num-seqs", "4", "--latency-profile", "paper-4060ti",
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, url, 120)
        model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        body = {"model": model, "max_tokens": 6, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hi."}]}
        raw = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
        assert raw.status_code == 200, raw.text
        resp = raw.json()
        assert resp["usage"]["completion_tokens"] >= 1
        assert resp["choices"][0]["finish_reason"] in ("stop", "length")
        # The same greedy request through the offline API on the same backend gives the same text.
        from sliceserve.engine.llm import LLM
        from sliceserve.request import SamplingParams

        llm = LLM(lcpp, profile="paper-4060ti")
        out = llm.generate("Say hi.", SamplingParams(max_tokens=6, temperature=0.0), use_chat_template=True)[0]
        assert resp["choices"][0]["message"]["content"] == out.text
    finally:
        proc.terminate()
        proc.wait(20)
