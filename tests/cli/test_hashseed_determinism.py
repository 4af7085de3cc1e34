"""Same seed, same JSON, even across processes whose string hashing differs (PYTHONHASHSEED): no policy
may let set or dict-of-hash iteration order leak into its decisions."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sliceserve.core.policies import available_policies


def _run(tmp_path: Path, hashseed: str) -> bytes:
    out = tmp_path / f"result-{hashseed}.json"
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    subprocess.run(
        [sys.executable, "-m", "sliceserve", "simulate", "--policy", ",".join(available_policies()),
         "--workload", "edge-mix", "--profile", "paper-4060ti", "--request-rate", "2", "--duration", "20",
         "--seed", "3", "--no-progress", "--output", str(out)],
        check=True, env=env, stdout=subprocess.DEVNULL)
    return out.read_bytes()


def test_every_policy_is_deterministic_across_hash_seeds(tmp_path: Path) -> None:
    assert _run(tmp_path, "1") == _run(tmp_path, "2")
