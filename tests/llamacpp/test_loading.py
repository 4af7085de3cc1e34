"""KV geometry handed to the scheduler, the backend switch, and one-line errors (exit 2 from the CLI)."""
from __future__ import annotations

import sys

import pytest

from sliceserve.cli import main


def test_kv_capacity_matches_llama_cpp_context(lcpp):
    native = lcpp.runner.native
    assert lcpp.num_kv_blocks * lcpp.block_size == native.n_ctx == native.n_seq_max * native.n_ctx_seq
    assert lcpp.max_model_len <= native.n_ctx_seq
    assert native.n_seq_max >= lcpp.max_num_seqs


def test_scheduler_takes_the_executor_limits(lcpp):
    from sliceserve.core.latency import LatencyModel
    from sliceserve.engine.llm import build_engine

    engine = build_engine(lcpp, "slice", LatencyModel([0.02]), enable_prefix_caching=True)
    config = engine.scheduler.config
    assert config.max_num_seqs == lcpp.max_num_seqs and not config.enable_prefix_caching
    assert config.num_kv_blocks * config.block_size == lcpp.runner.native.n_ctx
    with pytest.raises(ValueError, match="exceeds the 16 sequences"):
        build_engine(lcpp, "slice", LatencyModel([0.02]), max_num_seqs=17)


def test_cli_errors_are_one_line(tmp_path, capsys, gguf_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    truncated = tmp_path / "truncated.gguf"
    with open(gguf_path, "rb") as f:
        truncated.write_bytes(f.read(200_000))
    cases = [(tmp_path / "missing.gguf", "does not exist"), (bad, "bad magic"), (truncated, "cannot load this GGUF")]
    for path, problem in cases:
        assert main(["generate", "--backend", "llamacpp", "--model", str(path), "--prompt", "hi"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and problem in err


def test_missing_llama_cpp_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)    # import llama_cpp now raises ImportError
    assert main(["generate", "--backend", "llamacpp", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'sliceserve[llamacpp]'" in err


def test_generate_cli_on_llamacpp(capsys):
    assert main(["generate", "--backend", "llamacpp", "--prompt", "The capital of France is", "--max-tokens", "8",
                 "--profile", "paper-4060ti"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() and "8 output tokens" in out.err
