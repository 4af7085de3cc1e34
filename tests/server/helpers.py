"""Start a real uvicorn server on loopback in a thread; tear it down after the test. Also: wait for a
`sliceserve serve` subprocess to answer."""
from __future__ import annotations

import socket
import subprocess
import threading
import time
from typing import Any

import httpx
import uvicorn

from sliceserve.core.latency import LatencyModel
from sliceserve.server.app import create_app
from sliceserve.server.settings import ServerSettings
from sliceserve.server.state import ServingState, build_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(state), host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def scheduler(self):
        return self.state.engine.core.scheduler

    def openai(self, **kw: Any):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=60, **kw)


# Fast enough that no realistic SLO is judged impossible on the tiny model, slow enough to be finite.
TINY_LATENCY = LatencyModel([0.002, 0.0025, 0.003, 0.0035], prefill_base_s=0.001, prefill_per_token_s=1e-5,
                            name="tiny-test")


def make_state(loaded: Any, **settings: Any) -> ServingState:
    # TINY_LATENCY is pinned on purpose: an idle-gap re-profile (tests/server/test_idle_reprofile.py) would
    # replace it with the tiny model's measured times in the longer tests.
    defaults = {"policy": "vllm", "served_model_name": "tiny", "idle_reprofile": False}
    return build_state(ServerSettings(**{**defaults, **settings}), loaded=loaded, latency=TINY_LATENCY)


class WrappedRunner:
    """The real runner, slowed down per iteration (so requests stay in flight long enough to observe) and
    failing any iteration that contains a prompt with `poison_token`."""

    def __init__(self, inner: Any, delay_s: float = 0.0, poison_token: int | None = None) -> None:
        self.inner, self.delay_s, self.poison_token = inner, delay_s, poison_token
        self.num_failures = 0

    def execute(self, sched):
        if self.poison_token is not None and any(self.poison_token in r.prompt_token_ids
                                                 for r in sched.requests.values()):
            self.num_failures += 1
            raise RuntimeError("injected executor failure")
        if self.delay_s and not sched.is_empty:
            time.sleep(self.delay_s)
        return self.inner.execute(sched)


def wrap(loaded: Any, **kw: Any) -> Any:
    from dataclasses import replace

    return replace(loaded, runner=WrappedRunner(loaded.runner, **kw))


def wait_until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def wait_until_serving(proc: subprocess.Popen, url: str, timeout_s: float) -> None:
    """Return once `url`/v1/models answers 200; fail with the server's output if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise AssertionError(f"server at {url} did not answer within {timeout_s} s")
