"""The executor as the profiler (sliceserve/model/profiler.py) needs it.

The profiler times a decode at context `ctx` with a synthetic request that merely claims `ctx` computed
tokens: the torch runner then attends over whatever its cache slots hold. llama.cpp only holds what it
computed, so this view first prefills the missing context of such requests, untimed, and then runs the
iteration itself: the returned time is that of the real decode at that context, nothing else.
"""
from __future__ import annotations

from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.llamacpp.executor import LlamaCppExecutor
from sliceserve.request import Request


class SyntheticContextExecutor:
    def __init__(self, executor: LlamaCppExecutor) -> None:
        self.executor = executor
        self.vocab_size = executor.vocab_size

    def execute(self, sched: SchedulerOutput) -> ModelOutput:
        for rid in (*sched.finished, *sched.preempted):
            self.executor.forget(rid)
        fill: dict[str, int] = {}
        shadows: dict[str, Request] = {}
        decoding = [(rid, sched.requests[rid].num_tokens - 1) for rid in sched.decode]
        chunks = [(rid, sched.requests[rid].num_computed_tokens) for rid in sched.prefill]
        for rid, pos in decoding + chunks:
            have = self.executor.seqs.length.get(rid, 0)
            if pos > have:
                req = sched.requests[rid]
                # A stand-in holding just the first `pos` tokens, so the fill ends exactly at `pos`.
                shadows[rid] = Request(rid, req.token_ids(0, pos), req.sampling_params, req.arrival_s)
                shadows[rid].num_computed_tokens = have
                fill[rid] = pos - have
        budget = self.executor.native.n_batch
        while fill:   # in slices the context's batch can hold
            part: dict[str, int] = {}
            for rid in list(fill):
                take = min(fill[rid], budget - sum(part.values()))
                if take <= 0:
                    break
                part[rid] = take
            out = self.executor.execute(SchedulerOutput(prefill=part, requests=shadows))
            if out.errors:
                raise RuntimeError(f"filling synthetic context failed: {next(iter(out.errors.values()))}")
            for rid, n in part.items():
                shadows[rid].num_computed_tokens += n
                fill[rid] -= n
                if not fill[rid]:
                    del fill[rid]
        return self.executor.execute(SchedulerOutput(prefill=sched.prefill, decode=sched.decode,
                                                     requests=sched.requests, block_tables=sched.block_tables))
