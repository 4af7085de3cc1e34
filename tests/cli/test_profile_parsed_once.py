"""A sweep parses its latency profile file once per run, not once per policy x rate (issue 20), and every
simulation still gets its own fresh copy: results equal those of the built-in profile the file was saved from."""
from __future__ import annotations

import json
from pathlib import Path

from sliceserve.cli import main
from sliceserve.core.latency import BUILTIN_PROFILES, LatencyModel

SWEEP = ["simulate", "--policy", "vllm,slice", "--workload", "edge-mix", "--duration", "8", "--sweep-rate", "1:3:1",
         "--seed", "1", "--noise", "0.05", "--no-progress"]


def test_sweep_parses_the_profile_file_once_and_matches_the_builtin(tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "device.json"
    BUILTIN_PROFILES["paper-4060ti"].save(path)
    loads: list[str] = []
    real = LatencyModel.load.__func__

    def counting(cls, p):
        loads.append(str(p))
        return real(cls, p)

    monkeypatch.setattr(LatencyModel, "load", classmethod(counting))
    from_file, builtin = tmp_path / "file.json", tmp_path / "builtin.json"
    assert main(SWEEP + ["--profile", str(path), "--output", str(from_file)]) == 0
    assert loads == [str(path)]          # 2 policies x 3 rates, one parse
    assert main(SWEEP + ["--profile", "paper-4060ti", "--output", str(builtin)]) == 0
    capsys.readouterr()
    a, b = json.loads(from_file.read_text()), json.loads(builtin.read_text())
    assert len(a["sweep"]) == 3 and a["sweep"] == b["sweep"]   # no run saw another's calibrated model
    assert a["config"]["profile_model"] == b["config"]["profile_model"]
