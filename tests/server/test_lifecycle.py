"""`sliceserve serve` as a process: every start-up failure exits 2 with one line (busy port and bad policy
within 2 s, before any model loads); /health says "loading" while the model loads; SIGTERM drains: new
requests get 503, in-flight streams finish (or, past --shutdown-timeout, end with an error event and
`data: [DONE]`), exit code 0."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.server.helpers import free_port

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _serve(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sliceserve", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def _fails(args: list[str], needle: str, *, within_s: float | None = None) -> str:
    start = time.monotonic()
    proc = _serve(*args)
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("sliceserve serve: error:") and needle in last, err
    if within_s is not None:
        # The < 2 s promise rests on failing before torch or the model load; checked structurally (import
        # trace), the time only printed with the load average and loosely bounded (the suite runs on shared,
        # oversubscribed machines where a bare `python -c pass` can take a second).
        print(f"{args}: exit 2 after {elapsed:.2f} s (load {os.getloadavg()[0]:.1f})")
        assert elapsed < within_s * 5, f"took {elapsed:.2f} s"
        assert len(err.strip().splitlines()) == 1, err      # nothing loaded, nothing else said
        trace = subprocess.run([sys.executable, "-X", "importtime", "-m", "sliceserve", "serve", *args],
                               capture_output=True, text=True, env=ENV, timeout=120).stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in trace.splitlines() if line.startswith("import time")}
        assert "torch" not in imported and "transformers" not in imported and "uvicorn.main" not in imported
    return last


def test_busy_port_and_bad_policy_fail_fast(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _fails(["--port", str(port)], f"cannot bind 127.0.0.1:{port}", within_s=2.0)
    _fails(["--policy", "nope", "--port", str(free_port())], "unknown policy 'nope'", within_s=2.0)


def test_other_start_up_failures_are_one_line(tmp_path):
    _fails(["--class-slo", "realtime=p99 ttft <= soon", "--port", str(free_port())],
           "cannot parse SLO term 'p99 ttft <= soon'", within_s=2.0)
    _fails(["--model", str(tmp_path / "missing.gguf"), "--port", str(free_port())], "model not found",
           within_s=2.0)
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(4096))
    _fails(["--model", str(corrupt), "--port", str(free_port()), "--log-level", "warning"], "start-up failed")
    broken = tmp_path / "broken-hf"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    _fails(["--model", str(broken), "--port", str(free_port()), "--log-level", "warning"], "start-up failed")


def _stream(url: str, out: list[str], started: threading.Event) -> None:
    body = {"prompt": "one two", "max_tokens": 900, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line:
                out.append(line)
                started.set()


def _start_tiny(model_dir, timeout_s: str) -> tuple[subprocess.Popen, str, list[int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve("--model", str(model_dir), "--port", str(port), "--policy", "vllm", "--log-level", "warning",
                  "--shutdown-timeout", timeout_s)
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            r = httpx.get(url + "/health", timeout=2)
            seen.append(r.status_code)
            if r.status_code == 200:
                return proc, url, seen
            assert r.json()["status"] == "loading"
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise AssertionError("server did not come up")


@pytest.mark.parametrize("timeout_s", ["60", "0"], ids=["drained", "cut-at-timeout"])
def test_sigterm_drains_four_streams(tiny_llama_dir, timeout_s):
    proc, url, seen = _start_tiny(tiny_llama_dir, timeout_s)
    try:
        assert 503 in seen       # answered "loading" (not refused) while the model loaded
        outs = [[] for _ in range(4)]
        started = [threading.Event() for _ in range(4)]
        threads = [threading.Thread(target=_stream, args=(url, o, s)) for o, s in zip(outs, started)]
        for t in threads:
            t.start()
        assert all(s.wait(60) for s in started)
        proc.send_signal(signal.SIGTERM)
        if timeout_s != "0":
            time.sleep(0.1)
            late = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=10)
            assert late.status_code == 503 and late.json()["error"]["code"] == "draining"
            assert httpx.get(url + "/health", timeout=10).json()["status"] == "draining"
        for t in threads:
            t.join(120)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for out in outs:
        assert out[-1] == "data: [DONE]"
        last = json.loads(out[-2][len("data: "):])
        if timeout_s == "0":
            assert "shutdown timeout" in last["error"]["message"]
        else:
            assert last["choices"][0]["finish_reason"] == "length"
            assert sum(len(c["text"]) > 0 for line in out[:-1] for c in json.loads(line[6:])["choices"]) > 100


# A model load that never ends, inside torch: what a SIGTERM meets a few seconds into loading a real model
# (dequantising the GGUF, the latency quick-estimate).
_SPINNING_LOAD = """
import sys, torch
import sliceserve.server.state as state

def load_forever(settings, *args, **kwargs):
    a = torch.randn(256, 256)
    while True:
        a = (a @ a).tanh()

state.build_state = load_forever
from sliceserve.server.run import serve
from sliceserve.server.settings import ServerSettings
serve(ServerSettings(port=int(sys.argv[1])))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_stopping_while_the_model_loads_exits_cleanly(sig):
    """Before: the interpreter exited under the loader thread's torch code and the process aborted (exit 134,
    "terminate called without an active exception")."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _SPINNING_LOAD, str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["status"] == "loading":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        time.sleep(0.5)   # the loader is in torch by now
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "terminate called" not in err and "Traceback" not in err
    assert "stopped while the model was loading" in err


def test_a_second_signal_ends_what_is_in_flight_at_once_with_an_error_each(tiny_llama_dir):
    """Before: the second signal was uvicorn's own exit, which cancelled the handlers: a plain request got a
    plain-text 500 and the log a traceback per request."""
    proc, url, _ = _start_tiny(tiny_llama_dir, "60")
    try:
        outs = [[] for _ in range(3)]
        started = [threading.Event() for _ in range(3)]
        threads = [threading.Thread(target=_stream, args=(url, o, s)) for o, s in zip(outs, started)]
        plain: list[httpx.Response] = []
        threads.append(threading.Thread(target=lambda: plain.append(httpx.post(
            url + "/v1/completions", json={"prompt": "one two", "max_tokens": 900, "ignore_eos": True},
            timeout=120))))
        for t in threads:
            t.start()
        assert all(s.wait(60) for s in started)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert httpx.get(url + "/health", timeout=10).json()["status"] == "draining"
        proc.send_signal(signal.SIGTERM)
        begun = time.monotonic()
        for t in threads:
            t.join(60)
        _, err = proc.communicate(timeout=60)
        print(f"ended {time.monotonic() - begun:.2f} s after the second signal (load {os.getloadavg()[0]:.1f})")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    for out in outs:
        assert out[-1] == "data: [DONE]"
        assert "stopped by a second signal" in json.loads(out[-2][len("data: "):])["error"]["message"]
    (resp,) = plain
    assert resp.headers["content-type"].startswith("application/json")
    assert "stopped by a second signal" in resp.json()["error"]["message"], resp.text
