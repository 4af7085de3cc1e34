"""A `sliceserve serve` child process for the live benchmarks: started on a free local port (or a given one),
handed over only once `GET /ready` answers 200, stopped with SIGTERM (the server drains) and SIGKILL after a
grace period. One helper, so every live benchmark starts and stops the server the same way."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`ServerProcess("--dtype", "float32")`: the server is ready when the constructor returns; a context
    manager that stops it on exit. `log`: where its output goes (default: discarded)."""

    def __init__(self, *serve_args: str, port: int | None = None, log: IO | None = None,
                 ready_timeout_s: float = 300.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = serve_args
        cmd = [sys.executable, "-m", "sliceserve", "serve", "--port", str(self.port), "--log-level", "warning",
               *serve_args]
        self.proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {' '.join(self.args)} exited with {self.proc.returncode} while starting")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server {' '.join(self.args)} not ready after {timeout_s:g} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace_s`; the exit code after SIGTERM (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
