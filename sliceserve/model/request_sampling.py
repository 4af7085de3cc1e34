"""Per-request sampling state an executor keeps across iterations: seeds of unseeded requests and
stop-string detokenisers. Shared by the PyTorch runner and the llama.cpp executor, so both backends draw
the same tokens from the same logits and stop at the same place."""
from __future__ import annotations

import random

import numpy as np

from sliceserve.model.stops import StopStringState
from sliceserve.request import Request


class RequestSampling:
    def __init__(self, tokenizer=None, seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self._rng = random.Random(seed)
        self._seeds: dict[str, int] = {}
        self._stops: dict[str, StopStringState] = {}

    def forget(self, req_id: str) -> None:
        self._seeds.pop(req_id, None)
        self._stops.pop(req_id, None)

    def sample(self, req: Request, logits: np.ndarray) -> int:
        params = req.sampling_params
        if params.temperature == 0.0:
            return int(np.argmax(logits))   # greedy needs no torch round trip
        import torch

        from sliceserve.model.sampler import sample

        return sample(torch.from_numpy(logits), params, self.seed(req), req.num_output_tokens)

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
