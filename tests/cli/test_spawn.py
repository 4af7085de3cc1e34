"""The live benchmarks' server helper: a child that dies while starting is reported at once, with its code."""
from __future__ import annotations

import time

import pytest

from sliceserve.bench.spawn import ServerProcess, free_port


def test_a_server_that_exits_while_starting_is_an_error_not_a_wait(tmp_path):
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exited with [1-9]"):
        ServerProcess("--model", str(tmp_path / "missing.gguf"), ready_timeout_s=120)
    assert time.monotonic() - started < 60     # not the ready timeout


def test_free_port_is_bindable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
