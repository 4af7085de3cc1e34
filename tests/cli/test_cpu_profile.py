"""The shipped CPU profile of the int8 default loads as a built-in and drives `sliceserve simulate`."""
from __future__ import annotations

import json
from pathlib import Path

from sliceserve.cli import main
from sliceserve.core.latency import BUILTIN_PROFILES, load_profile


def test_cpu_profile_is_built_in_and_shaped_like_this_device():
    model = load_profile("cpu-epyc-int8")
    assert "cpu-epyc-int8" in BUILTIN_PROFILES and model.name == "cpu-epyc-int8"
    table = model.decode_table_s
    assert len(table) == 16 and all(a <= b for a, b in zip(table, table[1:]))
    # Measured, not the GPU reference: a step of one sequence takes milliseconds to tens of milliseconds,
    # batch 16 costs more than batch 1 (less than 2x on int8 here), a 256-token prompt more than a step.
    assert 0.005 < model.decode_time(1) < 0.2
    assert model.decode_time(16) > model.decode_time(1)
    assert model.prefill_time(256) > model.decode_time(1)
    assert model.decode_time(1) != load_profile("paper-4060ti").decode_time(1)


def test_simulate_runs_on_the_cpu_profile(tmp_path: Path, capsys):
    out = tmp_path / "sim.json"
    code = main(["simulate", "--policy", "slice", "--workload", "edge-mix", "--request-rate", "1", "--duration",
                 "20", "--profile", "cpu-epyc-int8", "--output", str(out)])
    capsys.readouterr()
    assert code == 0
    result = json.loads(out.read_text())
    assert result["results"]["slice"]["summary"]
