"""The torch runner as the profiler (sliceserve/model/profiler.py) needs it.

The profiler times a decode at context `ctx` with a synthetic request that merely claims `ctx` computed
tokens, so attention reads cache slots nothing ever wrote. The cache is allocated with `torch.empty`: those
slots hold whatever the allocator's memory held before (after a memory target streamed and freed fp32
weights, old heap contents). Bit patterns that read as NaN or inf turned the attention output into NaN, and
the int8 path's dynamic quantisation of the next layer's input then failed with `ChooseQuantizationParams:
min <= max` -- about one `--memory-limit 1GiB` start in five; fp32 took the NaNs silently, and denormals
would skew the timings. This view zeroes each block a synthetic request may read before it is first used,
untimed (the runner's own clock times only the iteration), so every start measures defined values.
"""
from __future__ import annotations

from sliceserve.core.outputs import ModelOutput, SchedulerOutput


class DefinedContextRunner:
    def __init__(self, runner) -> None:
        self.runner = runner
        self.vocab_size = runner.vocab_size
        self._defined: set[int] = set()   # blocks zeroed or written since this view began

    def execute(self, sched: SchedulerOutput) -> ModelOutput:
        reading = [rid for rid in (*sched.decode, *sched.prefill) if sched.requests[rid].num_computed_tokens > 0]
        blocks = {b for rid in reading for b in sched.block_tables.get(rid, ())} - self._defined
        if blocks:
            self.runner.zero_kv_blocks(sorted(blocks))
            self._defined |= blocks
        return self.runner.execute(sched)
