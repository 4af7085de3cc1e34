"""SLICE's view of the waiting queue, kept up to date as requests come and go (issue 21: decision cost).

Every waiting request is in exactly one of:
- the pool (`NewcomerPool`): it never ran (no token computed, none out), has no e2e deadline and no rate
  boost, so its candidate changes with time only through its TTFT feasibility and is built once (`cached`);
- `others`: every other waiting request (an e2e deadline's rate grows as time passes, a boosted or a
  preempted request's depends on its progress), built again at each rebuild like the running ones;
- pending: a request back from a recompute preemption that is fresh again but has no candidate yet, built
  at the next rebuild.

A candidate is built when its request arrives (`enter`), not at the rebuild that first sees it, so a burst
of 1,000 arrivals costs each arrival its own build (~3 us) instead of one decision ~3 ms. The candidate is
exactly the one that rebuild would have built, which is what keeps decisions unchanged: it is built under
the latency figures the rebuild would use (`CandidateBuilder.begin`'s figures; the drivers add requests just
before a step, so they match) and rebuilt there if they differ; its TTFT is checked again at the rebuild
(`NewcomerPool.expire`), and an infeasible SLO is counted as a risk by the rebuild that first sees it, as
before (a request refused at that rebuild for its lost TTFT is not counted).
"""
from __future__ import annotations

from sliceserve.config import SchedulerConfig
from sliceserve.core.slice.candidates import CandidateBuilder
from sliceserve.core.slice.feedback import SliceFeedback
from sliceserve.core.slice.pool import NewcomerPool
from sliceserve.core.slice.selection import Candidate
from sliceserve.request import Request


class WaitingIndex:
    def __init__(self, builder: CandidateBuilder, feedback: SliceFeedback) -> None:
        self.builder = builder
        self.feedback = feedback
        self.pool = NewcomerPool()
        self.cached: dict[str, Candidate] = {}   # never-run request -> its candidate (kept while it runs)
        self.others: dict[str, Request] = {}
        self._pending: dict[str, Request] = {}
        # Candidates built on arrival, by the figures they were built under, not yet seen by a rebuild:
        # (all of them, those infeasible when built).
        self._unseen: dict[tuple, tuple[list[Candidate], list[Candidate]]] = {}
        # Whether the latency model or the config may have moved since the builder last read its figures
        # (the policy sets it after every iteration and knob): a burst's first arrival reads them, the
        # others reuse them. Only a speed-up: a rebuild compares the figures anyway (`prepare`).
        self.figures_stale = True
        self._last_figures: tuple | None = None
        self._last_unseen: tuple[list[Candidate], list[Candidate]] = ([], [])

    def fresh(self, req: Request, cfg: SchedulerConfig) -> bool:
        """Whether `req` (waiting) belongs in the pool."""
        return (req.num_computed_tokens == 0 and not req.output_token_ids and req.slo.e2e_s is None
                and not (cfg.slice_feedback and req.req_id in self.feedback.boost))

    # --- requests in and out of the waiting queue -----------------------------------------------------
    def enter(self, req: Request, now: float, cfg: SchedulerConfig, cap_s: float, arrival: bool) -> None:
        """`req` joined the waiting queue: on `arrival`, or back from a recompute preemption."""
        rid = req.req_id
        if not self.fresh(req, cfg):
            self.others[rid] = req
            return
        c = self.cached.get(rid)
        if c is not None and c.req is req and not arrival:
            self.pool.add(c)
        elif not arrival:
            self._pending[rid] = req
        else:
            if self.figures_stale:
                self.builder.begin(cfg, cap_s)
                self.figures_stale = False
            figures = self.builder.figures
            c = self.cached[rid] = self.builder.build(req, now, cfg, cap_s, flag=False)
            self.pool.add(c)
            if figures is not self._last_figures:   # (a burst shares one figures object: no hashing it each time)
                self._last_figures = figures
                self._last_unseen = self._unseen.setdefault(figures, ([], []))
            self._last_unseen[0].append(c)
            if not c.feasible:
                self._last_unseen[1].append(c)

    def leave(self, req: Request) -> None:
        """`req` left the waiting queue (started, refused, aborted, finished)."""
        rid = req.req_id
        c = self.pool.members.get(rid)
        if c is not None and c.req is req:
            self.pool.remove(rid)
        if self.others.get(rid) is req:
            del self.others[rid]
        if self._pending.get(rid) is req:
            del self._pending[rid]

    def forget(self, req: Request) -> None:
        """`req` ended."""
        self.leave(req)
        c = self.cached.get(req.req_id)
        if c is not None and c.req is req:
            del self.cached[req.req_id]

    def reclassify(self, req: Request, now: float, cfg: SchedulerConfig, cap_s: float) -> None:
        """Something `fresh` reads changed (a rate boost was set): move `req` if it waits."""
        rid = req.req_id
        if rid in self.pool or rid in self.others or rid in self._pending:
            self.leave(req)
            self.enter(req, now, cfg, cap_s, arrival=False)

    def unpooled(self) -> list[Request]:
        return [*self.others.values(), *self._pending.values()]

    # --- a rebuild ------------------------------------------------------------------------------------
    def lost(self, now: float) -> list[Candidate]:
        """Pool members whose TTFT passed (with no token out) since the last rebuild."""
        return self.pool.expire(now)

    def mark_lost(self, lost: list[Candidate]) -> None:
        """Members whose TTFT passed stay, infeasible (when they are not refused: `slice_reject_lost`)."""
        for c in lost:
            if c.feasible:
                self.pool.mark_infeasible(c)
                self.feedback.flag(c.req, "SLO can no longer be met")

    def prepare(self, now: float, cfg: SchedulerConfig, cap_s: float) -> None:
        """Start a rebuild (`CandidateBuilder.begin`) and bring the pool to what it would have built: members
        built on arrival under other figures are built again, infeasible ones are counted as risks, and the
        pending ones are built."""
        figures = self.builder.begin(cfg, cap_s)
        self.figures_stale = False
        members = self.pool.members
        for built_under, (built, infeasible) in self._unseen.items():
            if built_under == figures:
                for c in infeasible:
                    if members.get(c.req.req_id) is c and not c.req.slo.is_empty:
                        self.feedback.flag(c.req, "SLO can no longer be met")
                continue
            for c in built:
                if members.get(c.req.req_id) is c:
                    c = self.cached[c.req.req_id] = self.builder.build(c.req, now, cfg, cap_s)
                    self.pool.replace(c)
        self._unseen.clear()
        self._last_figures = None
        for req in self._pending.values():
            c = self.cached[req.req_id] = self.builder.build(req, now, cfg, cap_s)
            self.pool.add(c)
        self._pending.clear()

    def check(self, waiting: list[Request], cfg: SchedulerConfig, now: float) -> None:
        """Invariants after `prepare` (tests turn them on through `check_invariants`)."""
        self.pool.check()
        assert not self._pending and not self._unseen, "a rebuild left candidates unbuilt"
        assert len(self.pool) + len(self.others) == len(waiting), "waiting queue and index out of step"
        for r in waiting:
            c = self.pool.members.get(r.req_id)
            if c is None:
                assert self.others.get(r.req_id) is r and not self.fresh(r, cfg), f"{r.req_id} misfiled"
                continue
            assert c.req is r and self.cached[r.req_id] is c and self.fresh(r, cfg), f"{r.req_id} misfiled"
            if r.slo.ttft_s is not None and now > r.ttft_deadline_s:
                assert not c.feasible, f"{r.req_id} kept feasible past its TTFT"
