"""Phase 1: utility-density ranking, the capacity walk (skip / stop), KV and TTFT checks, backfill."""
from __future__ import annotations

import pytest

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel
from sliceserve.core.policies.slice import slice_period
from sliceserve.core.slice.selection import Candidate, SelectionParams, demand, select
from tests.slice.conftest import make_req


def cand(rid, rate, utility=100.0, prefill=0, blocks=4, arrival=0.0, ttft=0.5, tpot=0.05):
    req = make_req(rid, arrival=arrival, utility=utility, ttft=ttft, tpot=tpot)
    req.output_token_ids.append(0) if not prefill else None   # prefilled ones already have a token
    c = Candidate(req, rate, utility / rate, arrival + (ttft or 0.0), blocks, 1, prefill, 64.0)
    return c


def params(margin=0.0, misfit="skip", max_seqs=16, blocks=1000, layout="prefix"):
    return SelectionParams(1.0, margin, layout, misfit, max_seqs, blocks, 512)


def ranked(cands):
    return sorted(cands, key=lambda c: c.sort_key)


def test_demand_is_ceil_of_period_over_tpot():
    assert demand(0.05, 1.0, 1) == 20
    assert demand(0.12, 1.0, 1) == 9
    assert demand(0.25, 1.0, 1) == 4
    assert demand(None, 1.0, 3) == 3


@pytest.mark.parametrize("layout", ["prefix", "spread", "nested"])
def test_five_realtime_streams_exactly_four_selected(paper, layout):
    # 20 * l(4) = 1000 ms fills P = 1 s exactly; a fifth stream cannot fit. Default config (margin 0), whose
    # period on the paper's table is the paper's 1 s.
    cfg = SchedulerConfig()
    period = slice_period(cfg, paper)
    assert period == 1.0
    cands = ranked([cand(f"rt{i}", demand(0.05, period, cfg.slice_min_rate), arrival=i * 0.01)
                    for i in range(5)])
    p = SelectionParams(period, cfg.slice_margin, layout, cfg.slice_misfit, cfg.max_num_seqs,
                        cfg.num_kv_blocks, cfg.max_num_batched_tokens)
    sel = select(cands, p, paper, now=0.1)
    assert [c.req.req_id for c in sel.selected] == ["rt0", "rt1", "rt2", "rt3"]
    assert sel.cycle_time_s == pytest.approx(1.0)
    # A 5 % margin leaves room for only three (20 * l(3) = 760 ms; four would need 1000 ms > 950 ms).
    sel = select(cands, params(margin=0.05, layout=layout), paper, now=0.1)
    assert len(sel.selected) == 3


def test_newcomer_prefill_is_charged_to_spare_time_and_banked_slack(paper):
    # Three decoding streams (760 ms) and a fourth that still needs its prompt: the cycle would be full
    # (1000 ms), so its prefill (20 ms + 64 * 0.25 ms = 36 ms) must come out of the members' banked slack.
    def four(slack):
        rts = [cand(f"rt{i}", 20, arrival=i * 0.01) for i in range(3)]
        for c in rts:
            c.slack_s = slack
        return ranked(rts + [cand("new", 20, prefill=64, arrival=0.05)])
    ahead = select(four(0.040), params(), paper, now=0.1)
    assert [c.req.req_id for c in ahead.selected] == ["rt0", "rt1", "rt2", "new"]
    assert ahead.banking == []


def test_newcomer_short_of_slack_is_admitted_to_bank_it_while_its_ttft_allows(paper):
    # Members on their TPOT line (no slack): the 36 ms prefill must first be banked. While the newcomer's
    # row waits, columns cost 20 * l(3) = 760 ms per 1 s of TPOT line, so 36 ms take 36 / 240 s = 150 ms;
    # then prefill beside three decodes (36 + 38 ms). Its TTFT deadline is 0.05 + 0.5 = 0.55 s.
    def four():
        rts = [cand(f"rt{i}", 20, arrival=i * 0.01) for i in range(3)]
        for c in rts:
            c.slack_s = 0.0
        return ranked(rts + [cand("new", 20, prefill=64, arrival=0.05)])
    in_time = select(four(), params(), paper, now=0.3)          # first token ~0.524 s
    assert [c.req.req_id for c in in_time.selected] == ["rt0", "rt1", "rt2", "new"]
    assert in_time.banking == ["new"]
    too_late = select(four(), params(), paper, now=0.35)        # first token ~0.574 s
    assert [c.req.req_id for c in too_late.selected] == ["rt0", "rt1", "rt2"]
    assert too_late.banking == []


def test_decoding_candidates_after_a_banking_member_stay_out_of_the_selection(paper):
    # Two streams (540 ms) and a newcomer whose 1,000-token prompt (270 ms) exceeds the spare time left
    # with it (240 ms): it banks. A small stream that would fit the cycle stays out (the pending prefill is
    # charged to it too, and it has no prompt of its own to wait with): its decode steps would spend the
    # slack being banked for the newcomer.
    rts = [cand(f"rt{i}", 20, arrival=i * 0.01) for i in range(2)]
    for c in rts:
        c.slack_s = 0.0
    new = cand("new", 20, prefill=1000, arrival=0.05)
    small = cand("small", 2, utility=1.0)
    sel = select(ranked(rts + [new, small]), params(), paper, now=0.1)
    assert [c.req.req_id for c in sel.selected] == ["rt0", "rt1", "new"] and sel.banking == ["new"]


def test_rank_is_utility_per_decode_step_then_deadline_then_arrival():
    cheap = cand("cheap", 4, utility=1.0)          # 0.25 per step
    dear = cand("dear", 20, utility=2.0)           # 0.10 per step, despite the higher utility
    late = cand("late", 4, utility=1.0, arrival=1.0)
    early_deadline = cand("edl", 4, utility=1.0, arrival=2.0, ttft=0.1)
    order = [c.req.req_id for c in ranked([dear, late, cheap, early_deadline])]
    assert order == ["cheap", "late", "edl", "dear"]


def _misfit_cands():
    # Three real-time streams (760 ms), then a 20-step request that would reach 1000 ms, then a 4-step one
    # that fits (+48 ms).
    rts = [cand(f"rt{i}", 20, arrival=i * 0.01) for i in range(3)]
    big = cand("big", 20, utility=10.0)
    small = cand("small", 4, utility=1.0)
    return ranked(rts + [big, small])


def test_skip_continues_past_a_misfit(paper):
    sel = select(_misfit_cands(), params(margin=0.05, misfit="skip"), paper, now=0.1)
    assert [c.req.req_id for c in sel.selected] == ["rt0", "rt1", "rt2", "small"]
    assert "big" not in sel.mask.rows or "big" in {c.req.req_id for c in sel.best_effort}


def test_stop_ends_the_walk_at_the_first_misfit(paper):
    sel = select(_misfit_cands(), params(margin=0.05, misfit="stop"), paper, now=0.1)
    assert [c.req.req_id for c in sel.selected] == ["rt0", "rt1", "rt2"]


def test_kv_budget_is_respected(paper):
    cands = ranked([cand("a", 4, blocks=60), cand("b", 4, blocks=60, arrival=0.1), cand("c", 4, blocks=30, arrival=0.2)])
    sel = select(cands, params(blocks=100), paper, now=0.3)
    assert [c.req.req_id for c in sel.selected] == ["a", "c"]


def test_unreachable_ttft_is_not_selected_but_backfilled(paper):
    fresh = cand("fresh", 20, prefill=64, arrival=1.0)
    stale = cand("stale", 20, prefill=64, arrival=0.0)     # arrived 1 s ago, TTFT 0.5 s: lost
    sel = select(ranked([fresh, stale]), params(margin=0.05), paper, now=1.0)
    assert [c.req.req_id for c in sel.selected] == ["fresh"]
    assert [c.req.req_id for c in sel.ttft_misses] == ["stale"]
    assert [c.req.req_id for c in sel.best_effort] == ["stale"]   # leftover time still serves it


def test_backfill_uses_leftover_time_without_breaking_the_cycle(paper):
    rts = [cand(f"rt{i}", 20, arrival=i * 0.01) for i in range(3)]
    others = [cand(f"o{i}", 10, utility=1.0, arrival=1 + i, ttft=None, tpot=0.1) for i in range(6)]
    sel = select(ranked(rts + others), params(margin=0.05), paper, now=0.1)
    assert len(sel.selected) >= 3 and sel.best_effort
    assert sel.cycle_time_s <= 0.95 + 1e-9
    assert sel.mask.num_columns == 20                # best effort never lengthens the cycle
    for c in sel.selected:
        assert sel.mask.rate(c.req.req_id) == c.rate  # members keep exactly their demand


@pytest.mark.parametrize("order,expected", [("srpt", ["short", "mid"]), ("rank", ["long", "mid"])])
def test_best_effort_order(paper, order, expected):
    # One real-time stream leaves room for two best-effort rows; SRPT serves the least remaining work.
    rt = cand("rt", 20)
    lost = []
    for rid, work, arrival in (("long", 9.0, 0.0), ("mid", 2.0, 0.1), ("short", 0.5, 0.2)):
        c = cand(rid, 20, arrival=arrival, ttft=0.01)   # TTFT long gone: best effort only
        c.feasible, c.work_s = False, work
        lost.append(c)
    p = SelectionParams(1.0, 0.0, "prefix", "skip", 3, 1000, 512, backfill_order=order)
    sel = select(ranked([rt] + lost), p, paper, now=1.0)
    assert [c.req.req_id for c in sel.selected] == ["rt"]
    assert [c.req.req_id for c in sel.best_effort] == expected


def test_default_period_stretches_to_twice_a_slow_devices_prompt():
    cfg = SchedulerConfig()
    cpu = LatencyModel([0.063], prefill_base_s=0.051, prefill_per_token_s=0.00397)   # p(256) = 1.07 s
    assert slice_period(cfg, cpu) == pytest.approx(2 * (0.051 + 0.00397 * 256))
    assert slice_period(SchedulerConfig(slice_period_s=1.5), cpu) == 1.5   # a configured period wins


def test_a_started_stream_keeps_its_place_against_an_equal_density_newcomer(paper):
    # Four real-time rows fill P = 1 s (20 * l(4)). rt-early arrived first but has not started (its prompt
    # waits); rt-running arrived later and already streams. Equal density: the started stream ranks first,
    # so the newcomer, not the running stream, is what the cycle leaves out (dropping a started stream
    # breaks its TPOT, and the newcomer misses either way).
    others = [cand(f"rt{i}", 20, arrival=0.0) for i in range(3)]
    early = cand("rt-early", 20, prefill=32, arrival=0.10)
    running = cand("rt-running", 20, arrival=0.20)
    sel = select(ranked([*others, early, running]), params(), paper, now=0.3)
    assert "rt-running" in [c.req.req_id for c in sel.selected]
    assert "rt-early" not in [c.req.req_id for c in sel.selected]


def _three_on_their_line():
    rts = [cand(f"rt{i}", 20, arrival=i * 0.01) for i in range(3)]
    for c in rts:
        c.slack_s = 0.0
    return rts


def test_newcomer_banks_at_most_one_cycle_even_when_its_ttft_would_allow_more(paper):
    # A 1,000-token prompt (270 ms) beside three streams on their line: banking it at 240 ms per second
    # would take 1.125 s, longer than the cycle the selection plans over (and lower candidates would stay
    # out all that time), although its 5 s TTFT would still be met.
    long_prompt = cand("new", 20, prefill=1000, arrival=0.05, ttft=5.0)
    sel = select(ranked(_three_on_their_line() + [long_prompt]), params(), paper, now=0.1)
    assert sel.banking == [] and "new" not in [c.req.req_id for c in sel.selected]


def test_only_the_top_density_class_banks(paper):
    # A non-real-time newcomer (10 steps per cycle) short of slack beside real-time streams: banking for it
    # would take 0.6 s and keep every lower-ranked candidate out meanwhile; only the class with the top
    # utility density may do that.
    nrt = cand("nrt", 10, utility=1.0, prefill=1000, arrival=0.05, ttft=5.0, tpot=0.1)
    sel = select(ranked(_three_on_their_line() + [nrt]), params(), paper, now=0.1)
    assert sel.banking == [] and "nrt" not in [c.req.req_id for c in sel.selected]


def test_cycle_cost_charges_every_context_term_and_the_calibration():
    # A CPU-shaped model with both context slopes. The cycle the capacity test sees must equal the sum of
    # l(|column|, ctx) over its columns (each row's ctx is 64 here); before, the per-iteration context term
    # was left out (l(k) at zero context) and the per-request one ignored the online decode factor.
    lat = LatencyModel([0.05, 0.06, 0.07], ctx_coef_s=1e-5, ctx_iter_coef_s=2e-4)
    lat.decode_factor = 1.5
    cands = ranked([cand("a", 4, tpot=0.25), cand("b", 2, tpot=0.5, arrival=0.01)])
    sel = select(cands, params(), lat, now=0.1)
    assert len(sel.selected) == 2
    # Columns: two of {a, b}, two of {a}.
    expected = 2 * lat.decode_time(2, 64.0) + 2 * lat.decode_time(1, 64.0)
    assert sel.cycle_time_s == pytest.approx(expected)


# A CPU-shaped model whose prompt cost includes attention per (query, key) pair, as profiled on the 2-vCPU CPU.
CPU_ATTN = LatencyModel([0.02] * 16, prefill_base_s=0.02, prefill_per_token_s=1e-3, prefill_attn_s=1.2e-6)


def test_pending_prompts_are_priced_each_over_its_own_prefix_never_across_prompts():
    """Two prompts waiting, 1,500 and 500 tokens: their attention scores 1.25 M pairs (3.5 s), not the 2.0 M of
    one 2,000-token sequence (4.4 s), so a 4 s TTFT behind the first is still reachable."""
    first = cand("first", 20, prefill=1500, ttft=3.9)     # the earlier deadline: ranked first
    second = cand("second", 20, prefill=500, ttft=4.0, arrival=0.01)
    assert CPU_ATTN.prefill_time(2000) > 4.0 > CPU_ATTN.prefill_time(1500) + CPU_ATTN.prefill_time(500)
    sel = select(ranked([first, second]), params(), CPU_ATTN, now=0.01)
    assert [c.req.req_id for c in sel.selected] == ["first", "second"]
    assert sel.prefill_cost_s == pytest.approx(CPU_ATTN.prefill_time(1500) + CPU_ATTN.prefill_time(500)
                                               - CPU_ATTN.prefill_base_s)


def test_a_half_done_prompts_rest_is_priced_with_its_attention_over_what_it_has_cached():
    """500 tokens left of a 2,000-token prompt read the 1,500 cached: 1.6 s, where a fresh 500 costs 0.7 s;
    with a 1 s TTFT left it cannot make it."""
    req = make_req("half", prompt=2000, ttft=1.0)
    req.num_computed_tokens = 1500
    half = Candidate(req, 20, 100.0 / 20, 1.0, 4, 1, 500, 64.0)
    assert CPU_ATTN.prefill_time(500, 1500) > 1.0 > CPU_ATTN.prefill_time(500) + 0.1
    sel = select([half], params(), CPU_ATTN, now=0.0)
    assert [c.req.req_id for c in sel.ttft_misses] == ["half"]
