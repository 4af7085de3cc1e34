"""`sliceserve simulate` end to end: determinism, JSON shape, sweeps with plot and report, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sliceserve.cli import main
from sliceserve.core.policies import available_policies

BASE = ["simulate", "--policy", "vllm", "--workload", "edge-mix", "--request-rate", "2", "--duration", "15",
        "--profile", "paper-4060ti"]


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_same_seed_byte_identical_json_other_seed_differs(tmp_path: Path, capsys) -> None:
    paths = [tmp_path / f"{i}.json" for i in range(3)]
    for path, seed in zip(paths, ("1", "1", "2")):
        assert _run(BASE + ["--seed", seed, "--noise", "0.1", "--output", str(path)], capsys)[0] == 0
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c


def test_json_shape_and_consistency(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    code, stdout, _ = _run(BASE + ["--seed", "3", "--output", str(out)], capsys)
    assert code == 0
    data = json.loads(out.read_text())
    res = data["results"]["vllm"]
    s = res["summary"]
    for key in ("num_requests", "num_finished", "num_rejected", "slo_attainment", "goodput_rps", "mean_e2e_s",
                "p99_ttft_s", "mean_tpot_s", "throughput_tok_s", "num_preemptions", "utility_attainment"):
        assert key in s
    assert set(res["per_class"]) == {"realtime", "nrt-100", "nrt-120", "nrt-250"}
    assert sum(c["num_requests"] for c in res["per_class"].values()) == s["num_requests"]
    assert len(res["requests"]) == s["num_requests"] == data["config"]["workload"]["num_requests"]
    assert s["num_met"] == sum(r["met"] for r in res["requests"])
    # Every arrival ended one way or another; none is lost.
    assert all(r["finish_reason"] is not None for r in res["requests"])
    assert "vllm" in stdout and "realtime" in stdout and "ALL" in stdout


def test_every_policy_sees_identical_arrivals(tmp_path: Path, capsys) -> None:
    policies = available_policies()
    out = tmp_path / "r.json"
    assert _run(BASE + ["--policy", ",".join(policies), "--output", str(out)], capsys)[0] == 0
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == sorted(policies)
    arrivals = {p: [(r["arrival_s"], r["slo_class"], r["num_prompt_tokens"]) for r in res["requests"]]
                for p, res in results.items()}
    first = arrivals[policies[0]]
    assert all(a == first for a in arrivals.values())


def test_no_requests_flag_and_set_override(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    args = BASE + ["--no-requests", "--set", "max_num_seqs=4", "--num-kv-blocks", "2048", "--output", str(out)]
    assert _run(args, capsys)[0] == 0
    data = json.loads(out.read_text())
    assert "requests" not in data["results"]["vllm"]
    assert data["config"]["scheduler"]["max_num_seqs"] == 4
    assert data["config"]["scheduler"]["num_kv_blocks"] == 2048


def test_sweep_writes_json_png_and_markdown(tmp_path: Path, capsys) -> None:
    policies = available_policies()[:2]
    out, png, md = tmp_path / "s.json", tmp_path / "s.png", tmp_path / "s.md"
    args = ["simulate", "--policy", ",".join(policies), "--workload", "edge-mix", "--duration", "10",
            "--sweep-rate", "1:3:1", "--seed", "1", "--output", str(out), "--plot", str(png), "--report", str(md),
            "--no-progress"]
    code, stdout, _ = _run(args, capsys)
    assert code == 0
    data = json.loads(out.read_text())
    assert [p["rate"] for p in data["sweep"]] == [1.0, 2.0, 3.0]
    assert all(set(p["results"]) == set(policies) for p in data["sweep"])
    assert all("requests" not in r for p in data["sweep"] for r in p["results"].values())
    # More load, more arrivals: the sweep really changed the rate.
    counts = [p["num_requests"] for p in data["sweep"]]
    assert counts[0] < counts[1] < counts[2]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = md.read_text()
    assert "| rate (req/s) | policy |" in report and "realtime attainment" in report
    for point in data["sweep"]:
        att = point["results"][policies[0]]["summary"]["slo_attainment"]
        assert f"| {point['rate']:g} | {policies[0]} | {att:.3f} |" in report
    if len(policies) > 1:
        assert f"{policies[0]} vs each other policy" in report
    assert policies[0] in stdout


def test_trace_replay(tmp_path: Path, capsys) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" +
                     "".join(f"2023-11-16 18:15:{i:02d}.5000000,{100 + i},{10 + i}\n" for i in range(40)))
    out = tmp_path / "r.json"
    args = ["simulate", "--policy", "vllm", "--trace", str(trace), "--trace-mix", "realtime=1,nrt-250=1",
            "--request-rate", "4", "--seed", "1", "--output", str(out)]
    assert _run(args, capsys)[0] == 0
    res = json.loads(out.read_text())["results"]["vllm"]
    assert res["summary"]["num_requests"] == 40
    assert set(res["per_class"]) == {"realtime", "nrt-250"}
    assert max(r["arrival_s"] for r in res["requests"]) == pytest.approx(39 / 4)


@pytest.mark.parametrize("extra,needle", [
    (["--policy", "no-such-policy"], "unknown policy 'no-such-policy'"),
    (["--workload", "no-such-preset"], "unknown workload preset 'no-such-preset'"),
    (["--slo", "tpot<=-5ms"], "tpot"),
    (["--slo", "speed<=5ms"], "unknown SLO metric"),
    (["--slo", "realtime=p99 ttft <= 1s"], "cannot be enforced in scope 'request'"),
    (["--slo", "memory <= 1GB"], "resource of the whole server"),
    (["--request-rate", "fast"], "--request-rate"),
    (["--sweep-rate", "5:1:1"], "rate range"),
    (["--set", "max_num_seqs=0"], "max_num_seqs"),
    (["--set", "no_such_field=1"], "no_such_field"),
    (["--profile", "no-such-profile"], "no-such-profile"),
    (["--plot", "x.png"], "--sweep-rate"),
])
def test_bad_input_is_one_line_exit_2(extra: list[str], needle: str, capsys) -> None:
    code, _, err = _run(BASE + extra, capsys)
    assert code == 2
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_malformed_trace_line_in_a_real_process(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:00,10,5\n2023-11-16 18:15:01,x,5\n")
    # Also checks the design rule that the simulator path never imports torch.
    code = ("import sys; from sliceserve.cli import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules); raise SystemExit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "simulate", "--policy", "vllm", "--trace", str(trace)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert f"{trace}:3:" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", code, "simulate", "--policy", "vllm", "--workload", "uniform-test",
                           "--duration", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("False")
