"""`profile --backend llamacpp` through the shared profiler, and `simulate --profile` on its output."""
from __future__ import annotations

import json

from sliceserve.cli import main
from sliceserve.core.latency import load_profile


def test_profile_fits_llamacpp_and_simulate_accepts_it(tmp_path, capsys):
    out = tmp_path / "lcpp.json"
    assert main(["profile", "--backend", "llamacpp", "--output", str(out), "--max-batch", "4",
                 "--contexts", "16,64", "--chunks", "16", "--repeats", "1"]) == 0
    saved = json.loads(out.read_text())
    assert saved["device"]["backend"] == "llamacpp"
    model = load_profile(str(out))
    # llama.cpp's cost grows with the batch (no weight reuse across sequences on this CPU): l(4) > 1.5 l(1).
    assert model.decode_time(4) > 1.5 * model.decode_time(1) > 0
    capsys.readouterr()
    assert main(["simulate", "--profile", str(out), "--policy", "slice,vllm", "--duration", "5",
                 "--request-rate", "1", "--no-progress"]) == 0
    assert "slice" in capsys.readouterr().out
