"""`slice_sit_out`: how far ahead of its own TPOT line a lower-density member must be to sit a column out
for a higher-density newcomer's prompt (core/slice/fill.py `ColumnFill._sits_out`). Measured and off by
default (`column`): docs/results/peers-issue21.md section 0e. CPU only."""
from __future__ import annotations

import pytest

from tests.slice.conftest import make_req, make_slice

NOW = 1.95


def _scene(paper, mode: str):
    """A real-time prompt waits (400 tokens, TTFT 0.5 s) beside an nrt-100 member that is 30 ms ahead of its
    TPOT line: on its line, but less than one mean column (50 ms) ahead. Under `slice_started_first=valued`
    nrt members are this young (displaced and replaced more often) and the real-time prompt waited behind
    their decodes (Azure trace 1.4 req/s seed 3, docs/results/peers-issue21.md section 0d)."""
    sched = make_slice(paper.copy(), slice_sit_out=mode)
    nrt = make_req("nrt", arrival=0.8, prompt=32, max_tokens=200, tpot=0.1, ttft=1.0, utility=1.0, cls="nrt-100")
    late = make_req("late", arrival=0.8, prompt=32, max_tokens=200, tpot=0.1, ttft=1.0, utility=1.0, cls="nrt-100")
    rt0 = make_req("rt0", arrival=1.5, prompt=32, max_tokens=200)
    rt = make_req("rt", arrival=1.9, prompt=400, max_tokens=40)
    for r in (nrt, late, rt0, rt):
        sched.add_request(r, r.arrival_s)
    # 10 tokens each at its 100 ms TPOT; the line (98 ms a token) puts the next one at 1.98 s for nrt (30 ms
    # of slack at 1.95 s) and at 1.93 s for late (20 ms behind).
    for r, first in ((nrt, 1.0), (late, 0.95)):
        r.output_token_ids = [5] * 10
        r.token_times_s = [first + 0.1 * i for i in range(10)]
        r.num_computed_tokens = 32 + 10 - 1
    rt0.output_token_ids = [5] * 5
    rt0.token_times_s = [1.7 + 0.05 * i for i in range(5)]
    rt0.num_computed_tokens = 32 + 5 - 1
    sched._members = {"nrt": 10, "late": 10, "rt0": 20, "rt": 20}
    sched._prefilling = ["rt"]
    sched._cycle_s, sched._columns = 1.0, [[] for _ in range(20)]
    return sched, nrt, late, rt0


@pytest.mark.parametrize("mode", ["column", "line"])
def test_lower_density_member_on_its_line_yields_to_a_real_time_prompt_only_under_line(paper, mode):
    sched, nrt, late, rt0 = _scene(paper, mode)
    mean_col = sched._mean_column_s()
    assert mean_col == pytest.approx(0.05)
    assert 0 < sched._member_slack(nrt, NOW) < mean_col           # premise: on its line, < a column ahead
    assert sched._member_slack(late, NOW) < 0                     # premise: behind its line
    waiting = max(sched._density(r) for r in sched._waiting_prompts())
    assert waiting == sched._density(rt0)                          # the real-time prompt is what waits
    # column (today): a member sits out only when more than a mean column ahead of its line.
    # line: a lower-density member on or ahead of its line sits out for the real-time prompt.
    assert sched._sits_out(nrt, NOW, waiting, mean_col) is (mode == "line")
    # Either way a member behind its line decodes (sitting out would take it further off its TPOT), and a
    # real-time member (the prompt's own density) keeps its two-TPOT rule.
    assert not sched._sits_out(late, NOW, waiting, mean_col)
    assert not sched._sits_out(rt0, NOW, waiting, mean_col)


def test_line_changes_who_decodes_in_the_column(paper):
    """Through the fill's first phase: under `line` the nrt member's decode leaves the column to the prompt."""
    for mode, decoding in (("column", {"nrt", "late", "rt0"}), ("line", {"late", "rt0"})):
        sched, nrt, late, rt0 = _scene(paper, mode)
        for r in (nrt, late, rt0):
            sched.start(r)
            assert sched.reserve(r, r.num_computed_tokens + 1)
        it = sched._decode_members(["nrt", "late", "rt0"], NOW, True)
        assert set(it.batch.decode) == decoding, mode
