"""CLI front ends on a tiny random Llama: generate prints text, profile writes a loadable profile, bench
--engine local writes the simulate-shaped JSON; user errors are one line with exit code 2."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from sliceserve.cli import main  # noqa: E402
from sliceserve.core.latency import LatencyModel, load_profile  # noqa: E402

# 256 blocks of the tiny model's KV (2 layers x 2 heads x 16 dims, fp32): allocation stays trivial.
KV_BYTES = str(256 * 2 * 2 * 16 * 2 * 16 * 4)


def test_generate_prints_text_and_timings(tiny_llama_dir, tiny_loaded, capsys):
    rc = main(["generate", "--prompt", "Hello there", "--model", str(tiny_llama_dir), "--max-tokens", "5",
               "--policy", "vllm", "--threads", "1", "--dtype", "float32"])
    out, err = capsys.readouterr()
    assert rc == 0
    from sliceserve.engine.llm import LLM
    from sliceserve.request import SamplingParams

    expected = LLM(tiny_loaded, policy="vllm").generate("Hello there", SamplingParams(max_tokens=5))[0]
    assert out == expected.text + "\n"
    assert "ttft=" in err and "tpot=" in err and f"+ {len(expected.token_ids)} output tokens" in err


def test_generate_missing_model_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["generate", "--prompt", "hi", "--model", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "does not exist" in err


def test_profile_quick_writes_a_loadable_profile(tiny_llama_dir, tmp_path, capsys):
    path = tmp_path / "p.json"
    rc = main(["profile", "--output", str(path), "--model", str(tiny_llama_dir), "--quick", "--threads", "1",
               "--contexts", "16,64", "--chunks", "16,32", "--kv-cache-memory", KV_BYTES])
    assert rc == 0 and str(path) in capsys.readouterr().out
    model = load_profile(str(path))
    assert len(model.decode_table_s) == 4 and model.prefill_time(32) > 0
    assert json.loads(path.read_text())["device"]["num_kv_blocks"] == 256


def test_bench_local_writes_results_json(tiny_llama_dir, tmp_path, capsys):
    path = tmp_path / "bench.json"
    rc = main(["bench", "--engine", "local", "--model", str(tiny_llama_dir), "--policy", "vllm,orca",
               "--workload", "uniform-test", "--request-rate", "8", "--duration", "1", "--max-requests", "3",
               "--threads", "1", "--kv-cache-memory", KV_BYTES, "--output", str(path), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "vllm" in out and "orca" in out
    data = json.loads(path.read_text())
    cfg = data["config"]
    assert cfg["engine"] == "local" and cfg["policies"] == ["vllm", "orca"]
    # Derived scale: this device's l(1) at the reference prompt's context (256) over the paper GPU's 14 ms.
    device = LatencyModel.from_dict(cfg["profile_model"])
    assert cfg["slo_scale"] == pytest.approx(device.decode_time(1, 256) / 0.014)
    assert cfg["ttft_scale"] >= cfg["slo_scale"]   # TTFT follows prefill, never below the decode factor
    assert "slo_scale_rule" in cfg and cfg["scheduler"]["num_kv_blocks"] == 256
    assert set(data["results"]) == {"vllm", "orca"}
    for res in data["results"].values():
        assert {"summary", "per_class", "requests", "iterations"} <= set(res)
        assert res["summary"]["num_requests"] == len(res["requests"]) >= 1
        assert res["summary"]["num_finished"] == res["summary"]["num_requests"]
        assert all(r["num_output_tokens"] == 32 for r in res["requests"])  # uniform-test: fixed:32, EOS ignored
        assert sum(it[2] for it in res["iterations"]) >= 64 * len(res["requests"])  # every prompt prefilled
    ids = [[r["num_prompt_tokens"] for r in res["requests"]] for res in data["results"].values()]
    assert ids[0] == ids[1]  # identical arrivals for every policy


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "--request-rate", "0", "--duration", "1"]) == 2
    assert "--request-rate must be positive" in capsys.readouterr().err


def test_generate_streams_tokens_as_steps_make_them_and_keeps_the_stop_string_out(tiny_llama_dir, tiny_loaded,
                                                                                  capsys):
    from sliceserve.engine.llm import LLM
    from sliceserve.request import SamplingParams

    llm = LLM(tiny_loaded, policy="vllm")
    seen: list[tuple[int, list[int]]] = []
    full = llm.generate(["Hello there", "Bye"], SamplingParams(max_tokens=12),
                        on_tokens=lambda i, ids: seen.append((i, list(ids))))
    # One token per sequence per decode step, told in order: the pieces rebuild each output exactly.
    for i, out in enumerate(full):
        pieces = [ids for j, ids in seen if j == i]
        assert [t for ids in pieces for t in ids] == out.token_ids
        assert len(pieces) == len(out.token_ids)

    text = full[0].text
    stop = text[len(text) // 2: len(text) // 2 + 3]   # three characters from the middle of the greedy text
    assert stop.strip(), text
    rc = main(["generate", "--prompt", "Hello there", "--model", str(tiny_llama_dir), "--max-tokens", "12",
               "--policy", "vllm", "--threads", "1", "--dtype", "float32", "--stop", stop])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert out == text[:text.find(stop)] + "\n"
