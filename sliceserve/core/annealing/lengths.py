"""Predicted output length per SLO class, learned from finished requests.

The annealing paper orders requests by their SLO, input length and *possible* output length (Huang et
al., 2025) without saying how the latter is predicted. We keep a running mean of the output lengths of
requests of the same `slo_class` that ended normally (stop or length); aborted, rejected and failed
requests are left out because their length says nothing about what they would have generated. Until a
class has been seen, the prior is `default` tokens, or the request's own `max_tokens` when unset.
"""
from __future__ import annotations

from sliceserve.request import FinishReason, Request

_LEARN_FROM = (FinishReason.STOP, FinishReason.LENGTH)


class OutputLengthEstimator:
    def __init__(self, default: int | None = None) -> None:
        if default is not None and default <= 0:
            raise ValueError(f"default output length must be positive or unset, got {default!r}")
        self.default = default
        self._sum: dict[str, int] = {}
        self._count: dict[str, int] = {}

    def observe(self, req: Request) -> None:
        """Learn from a request that ended; ignores ends that are not a normal completion."""
        if req.finish_reason not in _LEARN_FROM or req.num_output_tokens == 0:
            return
        cls = req.slo_class
        self._sum[cls] = self._sum.get(cls, 0) + req.num_output_tokens
        self._count[cls] = self._count.get(cls, 0) + 1

    def class_mean(self, slo_class: str) -> float | None:
        count = self._count.get(slo_class)
        return self._sum[slo_class] / count if count else None

    def predict(self, req: Request) -> int:
        """Total output tokens `req` is expected to produce, within [1, max_tokens]."""
        mean = self.class_mean(req.slo_class)
        if mean is None:
            guess = self.default if self.default is not None else req.max_tokens
        else:
            guess = round(mean)
        return max(1, min(req.max_tokens, guess))

    def remaining(self, req: Request) -> int:
        """Output tokens still expected (at least 1: an unfinished request produces at least one more)."""
        return max(1, self.predict(req) - req.num_output_tokens)
