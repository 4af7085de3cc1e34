"""Azure LLM trace replay: parsing, relative times, rate scaling, duration cut, class mix, bad lines."""
from __future__ import annotations

from pathlib import Path

import pytest

from sliceserve.workload import get_preset, load_trace, read_trace_rows

AZURE_CONV = Path(__file__).resolve().parents[3] / "shared" / "data" / "azure-llm-2023" / "conv.csv"
CLASSES = {m.name: m.slo_class for m in get_preset("edge-mix")}


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + body)
    return path


def test_rows_are_relative_to_the_first_and_sorted(tmp_path: Path) -> None:
    path = _write(tmp_path, "2023-11-16 18:15:47.5000000,10,5\n2023-11-16 18:15:46.0000000,20,0\n"
                            "2023-11-16 18:15:50.2500000,30,7\n")
    assert read_trace_rows(path) == [(0.0, 20, 0), (1.5, 10, 5), (4.25, 30, 7)]


def test_numeric_timestamps_rate_scaling_and_duration_cut(tmp_path: Path) -> None:
    path = _write(tmp_path, "".join(f"{100 + 2 * i},50,{i}\n" for i in range(11)))  # 0.5 req/s natural
    w = load_trace(path, CLASSES, {"realtime": 1.0}, seed=0)
    assert [s.arrival_s for s in w.specs] == [2.0 * i for i in range(11)]
    assert w.specs[0].output_len == 1  # a zero-token row still generates one token
    fast = load_trace(path, CLASSES, {"realtime": 1.0}, seed=0, request_rate=2.0)
    assert [s.arrival_s for s in fast.specs] == pytest.approx([0.5 * i for i in range(11)])
    cut = load_trace(path, CLASSES, {"realtime": 1.0}, seed=0, request_rate=2.0, duration_s=2.0)
    assert len(cut.specs) == 4


def test_class_mix_is_seeded(tmp_path: Path) -> None:
    path = _write(tmp_path, "".join(f"{i},50,10\n" for i in range(400)))
    weights = {"realtime": 1.0, "nrt-250": 3.0}
    a = load_trace(path, CLASSES, weights, seed=1)
    assert a.specs == load_trace(path, CLASSES, weights, seed=1).specs
    assert a.specs != load_trace(path, CLASSES, weights, seed=2).specs
    share = sum(s.slo_class == "realtime" for s in a.specs) / len(a.specs)
    assert 0.18 < share < 0.32
    assert set(a.classes) == {"realtime", "nrt-250"}


@pytest.mark.parametrize("line", ["2023-11-16 18:15:47,abc,5", "2023-11-16 18:15:47,10", "yesterday,10,5",
                                  "2023-11-16 18:15:47,0,5", "2023-11-16 18:15:47,10,-3"])
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    path = _write(tmp_path, "2023-11-16 18:15:46,10,5\n" + line + "\n")
    with pytest.raises(ValueError) as err:
        read_trace_rows(path)
    assert f"{path}:3:" in str(err.value)


def test_bad_header_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,in,out\n1,2,3\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: expected header"):
        read_trace_rows(bad)
    with pytest.raises(ValueError, match="not found"):
        read_trace_rows(tmp_path / "absent.csv")


@pytest.mark.skipif(not AZURE_CONV.exists(), reason="Azure LLM 2023 trace not present")
def test_azure_conversation_trace() -> None:
    rows = read_trace_rows(AZURE_CONV)
    assert len(rows) > 10_000 and rows[0][0] == 0.0
    assert all(b[0] >= a[0] for a, b in zip(rows, rows[1:]))
    w = load_trace(AZURE_CONV, CLASSES, {"realtime": 0.2, "nrt-100": 0.8}, seed=1, request_rate=3.0,
                   duration_s=120.0)
    assert 200 < len(w.specs) < 520 and w.specs[-1].arrival_s < 120.0
