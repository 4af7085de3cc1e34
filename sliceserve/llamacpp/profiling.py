"""The executor as the profiler (sliceserve/model/profiler.py) needs it.

The profiler times a decode at context `ctx` with a synthetic request that merely claims `ctx` computed
tokens: the torch runner then attends over whatever its cache slots hold. llama.cpp only holds what it
computed, so this view first gives such requests their missing context, untimed, and then runs the iteration
itself: the returned time is that of the real decode at that context, nothing else. One request per context
length is prefilled (llama.cpp costs ~8 ms per prompt token on one thread here); the others of the same
length get a copy of its cells (llama_memory_seq_cp), since what the cells hold does not change the time.
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
        missing: dict[int, list[str]] = {}   # context length -> requests that need it, holding nothing yet
        wanted = [(rid, sched.requests[rid].num_tokens - 1) for rid in sched.decode]
        wanted += [(rid, sched.requests[rid].num_computed_tokens) for rid in sched.prefill]
        for rid, pos in wanted:
            if pos > 0 and rid not in self.executor.seqs:
                missing.setdefault(pos, []).append(rid)
        for pos, rids in missing.items():
            self._prefill(sched.requests[rids[0]], pos)
            self._copy(rids[0], rids[1:], pos)
        return self.executor.execute(SchedulerOutput(prefill=sched.prefill, decode=sched.decode,
                                                     requests=sched.requests, block_tables=sched.block_tables))

    def _prefill(self, req: Request, pos: int) -> None:
        # A stand-in holding the first `pos` tokens, fed in n_batch slices so the fill ends exactly at `pos`.
        shadow = Request(req.req_id, req.token_ids(0, pos), req.sampling_params, req.arrival_s)
        step = self.executor.native.n_batch
        while shadow.num_computed_tokens < pos:
            n = min(step, pos - shadow.num_computed_tokens)
            out = self.executor.execute(SchedulerOutput(prefill={req.req_id: n}, requests={req.req_id: shadow}))
            if out.errors:
                raise RuntimeError(f"filling a synthetic context failed: {out.errors[req.req_id]}")
            shadow.num_computed_tokens += n

    def _copy(self, source: str, targets: list[str], pos: int) -> None:
        ex = self.executor
        src = ex.seqs.seq_id(source)
        for rid in targets:
            dst = ex.seqs.acquire(rid)
            if dst is None:
                raise RuntimeError(f"all {ex.native.n_seq_max} llama.cpp sequences are in use")
            ex.native.copy_sequence(src, dst)
            ex.seqs.length[rid] = pos
