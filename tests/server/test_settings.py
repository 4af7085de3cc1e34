"""Server settings: CLI > SLICESERVE_* env > YAML file > defaults; unknown keys and bad values are errors."""
from __future__ import annotations

import pytest

from sliceserve.cli import main
from sliceserve.server.settings import load_settings


def test_precedence_cli_env_file_defaults(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("port: 9001\nhost: 0.0.0.0\nmax-waiting: 7\npolicy: orca\n"
                   "slo_classes:\n  gold: {ttft_ms: 200, tpot_ms: 40, utility: 10}\n")
    s = load_settings({"port": 9003, "policy": None}, config_file=str(cfg),
                      environ={"SLICESERVE_PORT": "9002", "SLICESERVE_POLICY": "vllm", "HOME": "/x"})
    assert s.port == 9003            # CLI beats env and file
    assert s.policy == "vllm"        # env beats file (the CLI left it unset)
    assert s.host == "0.0.0.0" and s.max_waiting == 7   # file beats defaults
    assert s.overload == "best_effort" and s.max_num_seqs == 16   # defaults
    gold = s.classes()["gold"]
    assert gold.slo.ttft_s == pytest.approx(0.2) and gold.utility == 10
    assert "realtime" not in s.classes()   # the file's classes replace the built-in ones


def test_defaults_carry_builtin_classes_and_slice_policy():
    s = load_settings({}, environ={})
    assert s.policy == "slice" and s.port == 8000 and s.host == "127.0.0.1"
    assert s.classes()["realtime"].slo.tpot_s == pytest.approx(0.05)
    scaled = load_settings({"slo_scale": 4.0}, environ={}).classes()["realtime"]
    assert scaled.slo.tpot_s == pytest.approx(0.2) and scaled.utility == 100
    assert scaled.slo.ttft_s == pytest.approx(4.0 * s.classes()["realtime"].slo.ttft_s)
    split = load_settings({"slo_scale": 4.0, "ttft_scale": 12.0}, environ={}).classes()["realtime"]
    assert split.slo.tpot_s == pytest.approx(0.2)
    assert split.slo.ttft_s == pytest.approx(12.0 * s.classes()["realtime"].slo.ttft_s)


@pytest.mark.parametrize("text,env,needle", [
    ("prot: 1\n", {}, "prot: unknown setting"),
    ("port: many\n", {}, "port"),
    ("overload: drop\n", {}, "overload"),
    ("slo_classes: {x: {ttft_ms: -1}}\n", {}, "ttft_ms"),
    ("- a list\n", {}, "mapping"),
    ("", {"SLICESERVE_MAX_WAITING": "0"}, "max_waiting"),
    ("", {"SLICESERVE_NOPE": "1"}, "SLICESERVE_NOPE"),
])
def test_bad_settings_raise_clear_errors(tmp_path, text, env, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ValueError, match=needle):
        load_settings({}, config_file=str(cfg), environ=env)


def test_serve_cli_bad_config_exits_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_num_seqs: 0\n")
    assert main(["serve", "--config", str(cfg)]) == 2
    assert "max_num_seqs" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.yaml")]) == 2
