"""`bench ... > log.txt` and `simulate ... > log.txt`: progress as plain lines, no carriage returns or escape
codes; a bar only when stderr is a terminal."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from sliceserve.bench.progress import NoProgress, PlainProgress, progress

# 256 blocks of the tiny model's KV (as tests/engine/test_cli.py sizes it).
KV_BYTES = str(256 * 2 * 2 * 16 * 2 * 16 * 4)


def _run_to_file(args: list[str], log: Path) -> str:
    """Run `sliceserve ARGS` with stdout and stderr both sent to `log`, as a shell `> log 2>&1` does."""
    with log.open("wb") as f:
        rc = subprocess.run([sys.executable, "-m", "sliceserve", *args], stdout=f, stderr=subprocess.STDOUT,
                            timeout=300).returncode
    text = log.read_bytes().decode()
    assert rc == 0, text
    return text


def _assert_plain(text: str) -> None:
    assert "\r" not in text, repr(text[max(0, text.find("\r") - 80):text.find("\r") + 80])
    assert "\x1b" not in text, repr(text[max(0, text.find("\x1b") - 80):text.find("\x1b") + 80])


def test_simulate_sweep_log_is_plain(tmp_path: Path) -> None:
    text = _run_to_file(["simulate", "--policy", "slice,vllm", "--workload", "edge-mix", "--duration", "5",
                         "--sweep-rate", "1:3:1", "--profile", "paper-4060ti", "--plot", str(tmp_path / "s.png")],
                        tmp_path / "log.txt")
    _assert_plain(text)
    # Progress still shows, one line per run (6 runs), and the table follows.
    assert "simulate: 6/6 runs (rate=3)" in text and "simulate: 1/6 runs (rate=1)" in text
    assert "slice" in text and "vllm" in text


def test_bench_local_log_is_plain(tiny_llama_dir, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    text = _run_to_file(["bench", "--engine", "local", "--model", str(tiny_llama_dir), "--policy", "vllm,slice",
                         "--workload", "uniform-test", "--request-rate", "8", "--duration", "1",
                         "--max-requests", "3", "--threads", "1", "--kv-cache-memory", KV_BYTES],
                        tmp_path / "log.txt")
    _assert_plain(text)
    assert "vllm: 3/3 requests" in text and "policies: 2/2 done" in text


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_bar_only_on_a_tty_and_quarters_for_long_runs() -> None:
    from tqdm import tqdm

    tty = _Stream(True)
    bar = progress(10, "x", enabled=True, stream=tty)
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress(10, "x", enabled=False, stream=tty), NoProgress)
    log = _Stream(False)
    bar = progress(400, "requests", "requests", stream=log)
    assert isinstance(bar, PlainProgress)
    for _ in range(400):
        bar.update(1)
    assert log.getvalue().splitlines() == [f"requests: {n}/400 requests" for n in (100, 200, 300, 400)]
