"""The llama.cpp executor: runs exactly the iteration a SchedulerOutput describes, as one llama_decode batch.

Each scheduled request feeds its tokens under its own sequence id: a prompt chunk (or a recompute after a
preemption) feeds tokens [num_computed_tokens, num_computed_tokens + n), a decode feeds its last token at
position num_tokens - 1. Logits are asked for only on rows that sample. Requests not scheduled feed nothing,
so they gain nothing. Finished and preempted requests have their sequence removed from llama.cpp's memory
before the batch runs, which frees their cells for this very iteration (recompute, like the torch runner).

llama.cpp owns the KV placement: the scheduler's block tables are only its accounting of the n_ctx cells
(num_kv_blocks * block_size == n_ctx), so the tables are not read here.
"""
from __future__ import annotations

import time

from sliceserve.core.outputs import ModelOutput, SchedulerOutput
from sliceserve.llamacpp.native import NativeContext
from sliceserve.model.request_sampling import RequestSampling
from sliceserve.llamacpp.seqs import SeqSlots
from sliceserve.request import Request


class LlamaCppExecutor:
    def __init__(self, native: NativeContext, tokenizer=None, seed: int = 0) -> None:
        self.native = native
        self.vocab_size = native.n_vocab
        self.seqs = SeqSlots(native.n_seq_max)
        self.sampling = RequestSampling(tokenizer, seed)

    def execute(self, sched: SchedulerOutput) -> ModelOutput:
        start = time.perf_counter()
        for rid in (*sched.finished, *sched.preempted):
            self.forget(rid)
        if sched.is_empty:
            return ModelOutput(elapsed_s=time.perf_counter() - start)
        errors: dict[str, str] = {}
        feeds = [f for f in sched.feeds() if not self._check(f, errors)]
        out = ModelOutput(errors=errors)
        if feeds:
            for req, logits in self._forward(feeds):
                try:
                    token, entry = self.sampling.choose(req, logits)
                except Exception as exc:  # noqa: BLE001 - one row's failure ends that request, not the batch
                    errors[req.req_id] = f"sampling failed: {type(exc).__name__}: {exc}"
                    continue
                out.sampled[req.req_id] = token
                if entry is not None:
                    out.logprobs[req.req_id] = entry
                if self.sampling.ends(req, token):
                    out.stopped.add(req.req_id)
        out.elapsed_s = time.perf_counter() - start
        return out

    def forget(self, req_id: str) -> None:
        """Drop a request's sequence from llama.cpp's memory and its sampling state."""
        seq = self.seqs.release(req_id)
        if seq is not None:
            self.native.remove(seq)
        self.sampling.forget(req_id)

    def close(self) -> None:
        self.native.close()

    # --- helpers ---------------------------------------------------------------------------------------
    def _check(self, feed: tuple[Request, int, int], errors: dict[str, str]) -> bool:
        """Record an error (and drop the feed) for a request this iteration cannot run; True if dropped."""
        req, pos, n = feed
        rid = req.req_id
        if pos == 0 and self.seqs.length.get(rid, 0) > 0:
            self.forget(rid)   # a recompute from scratch the executor was not told about: start clean
        problem = None
        if req.sampling_params.prompt_logprobs is not None:
            problem = "prompt logprobs (echo with logprobs) are not supported by the llamacpp backend"
        elif n <= 0 or pos + n > req.num_tokens:
            problem = f"asked to compute tokens [{pos}, {pos + n}) of a {req.num_tokens}-token request"
        elif pos + n > self.native.n_ctx_seq:
            problem = f"position {pos + n} is beyond llama.cpp's {self.native.n_ctx_seq} cells per sequence"
        elif pos != self.seqs.length.get(rid, 0):
            # llama.cpp holds only what it computed: a prefix-cache hit or a skipped chunk has no KV here.
            problem = (f"llama.cpp holds {self.seqs.length.get(rid, 0)} tokens of this request but was asked to "
                       f"continue at position {pos} (prefix caching is not supported by the llamacpp backend)")
        else:
            bad = [t for t in req.token_ids(pos, pos + n) if not 0 <= t < self.vocab_size]
            if bad:
                problem = f"token id {bad[0]} is outside the vocabulary (size {self.vocab_size})"
            elif self.seqs.acquire(rid) is None:
                problem = f"all {self.native.n_seq_max} llama.cpp sequences are in use (raise n_seq_max)"
        if problem:
            errors[rid] = problem
        return problem is not None

    def _forward(self, feeds: list[tuple[Request, int, int]]):
        """Flatten the feeds into rows and decode them in slices of at most n_batch tokens (one slice in
        the usual case, n_batch >= max_num_batched_tokens). Yields (request, logits) for each sampling row."""
        tokens: list[int] = []
        positions: list[int] = []
        seq_ids: list[int] = []
        samplers: dict[int, Request] = {}   # row -> request sampling from it
        for req, pos, n in feeds:
            seq = self.seqs.seq_id(req.req_id)
            tokens.extend(req.token_ids(pos, pos + n))
            positions.extend(range(pos, pos + n))
            seq_ids.extend([seq] * n)
            if pos + n >= req.num_tokens:
                samplers[len(tokens) - 1] = req
        step = self.native.n_batch
        for lo in range(0, len(tokens), step):
            hi = min(lo + step, len(tokens))
            rows = [r for r in range(lo, hi) if r in samplers]
            logits = self.native.decode(tokens[lo:hi], positions[lo:hi], seq_ids[lo:hi], [r - lo for r in rows])
            for r, row_logits in zip(rows, logits):
                yield samplers[r], row_logits
        for req, pos, n in feeds:
            self.seqs.length[req.req_id] = pos + n
