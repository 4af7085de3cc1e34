"""Per-request sampling state an executor keeps across iterations: seeds of unseeded requests, stop-string
detokenisers and grammar matchers; and the one function that turns a row of logits into a token (plus its
log-probabilities when asked). Shared by the PyTorch runner and the llama.cpp executor, so both backends
draw the same tokens from the same logits and stop at the same place."""
from __future__ import annotations

import random

import numpy as np
import torch

from sliceserve.model.guided import GuidedState
from sliceserve.model.logits_processing import LogprobEntry, end_tokens, logprob_entry, process
from sliceserve.model.stops import StopStringState
from sliceserve.request import Request


class RequestSampling:
    def __init__(self, tokenizer=None, seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self._rng = random.Random(seed)
        self._seeds: dict[str, int] = {}
        self._stops: dict[str, StopStringState] = {}
        self._guided: dict[str, GuidedState] = {}

    def forget(self, req_id: str) -> None:
        self._seeds.pop(req_id, None)
        self._stops.pop(req_id, None)
        self._guided.pop(req_id, None)

    @staticmethod
    def is_plain(req: Request) -> bool:
        """Greedy with nothing to process or report: the batched argmax is the answer."""
        p = req.sampling_params
        return p.temperature == 0.0 and p.logprobs is None and not p.needs_processing

    def choose(self, req: Request, logits: torch.Tensor | np.ndarray) -> tuple[int, LogprobEntry | None]:
        """The next token for `req` from its raw 1-D logits, and its log-probabilities if it asked."""
        from sliceserve.model.sampler import sample

        if isinstance(logits, np.ndarray):
            logits = torch.from_numpy(logits)
        logits = logits.float()
        params = req.sampling_params
        processed = logits
        if params.needs_processing:
            guided = self._guided_state(req)
            processed = process(logits, req, guided.allowed(logits.shape[0]) if guided else None)
        if params.temperature == 0.0:
            token = int(torch.argmax(processed))
        else:
            token = sample(processed, params, self.seed(req), req.num_output_tokens)
        if params.structured_outputs is not None:
            self._guided[req.req_id].advance(token)
        entry = logprob_entry(logits, token, params.logprobs) if params.logprobs is not None else None
        return token, entry

    def grammar_done(self, req: Request) -> bool:
        """The grammar admits no further token: the request ends here (with ignore_eos too, or when the
        model's end token is not the tokenizer's), with the finish reason `stop`."""
        state = self._guided.get(req.req_id)
        return state is not None and state.done

    def ends(self, req: Request, token: int) -> bool:
        """Whether `token` ends `req` in the executor's view: a stop string, or a completed grammar."""
        return self.hits_stop_string(req, token) or self.grammar_done(req)

    def sample(self, req: Request, logits: np.ndarray) -> int:
        return self.choose(req, logits)[0]

    def _guided_state(self, req: Request) -> GuidedState | None:
        spec = req.sampling_params.structured_outputs
        if spec is None:
            return None
        state = self._guided.get(req.req_id)
        if state is None or state.num_consumed != req.num_output_tokens:
            # New, or rebuilt after a preemption: replay the output so far through the grammar.
            state = GuidedState(spec, self.tokenizer, end_tokens(req))
            for t in req.output_token_ids:
                state.advance(t)
            self._guided[req.req_id] = state
        return state

    def hits_stop_string(self, req: Request, token: int) -> bool:
        stops = tuple(s for s in req.sampling_params.stop if s)
        if not stops or self.tokenizer is None:
            return False
        state = self._stops.get(req.req_id)
        if state is None or len(state.token_ids) != req.num_output_tokens:
            # New, or rebuilt after a preemption: replay the output so far (its stops already failed).
            state = StopStringState(stops)
            for t in req.output_token_ids:
                state.push(self.tokenizer, t)
            self._stops[req.req_id] = state
        return state.push(self.tokenizer, token)

    def seed(self, req: Request) -> int:
        """The request's own seed, or one drawn once from this executor's seeded RNG."""
        if req.sampling_params.seed is not None:
            return req.sampling_params.seed
        if req.req_id not in self._seeds:
            self._seeds[req.req_id] = self._rng.getrandbits(62)
        return self._seeds[req.req_id]
