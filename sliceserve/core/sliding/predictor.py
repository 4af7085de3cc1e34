"""SlidingServe's batch latency predictor: a linear model over batch features, one per regime, fitted
online from measured iterations.

Features (the paper's list; the exact definitions are ours):
    total tokens, prefill tokens, decode tokens,
    decode context  = sum of the cached context of every decoding request (attention reads per decode),
    prefill context = sum over prefill chunks of chunk_len * tokens already cached before the chunk
                      (attention work of a chunk against its prefix; 0 for a fresh prompt's first chunk),
    number of prefills, sum of squared prefill chunk lengths (attention within a chunk),
plus an intercept (the fixed cost of one iteration: weight loading, launch overheads).
total = prefill + decode is collinear by construction; the small ridge term below makes the fit unique.

Regimes: decode-only (no prefill token), mixed (some prefill, fewer than `heavy_prefill_tokens`),
prefill-heavy (at least that many). The paper names the three regimes without giving the boundary; the
default 128 (`sliding_heavy_prefill_tokens`) is our choice, about where a chunk's compute rather than
weight loading starts to set an iteration's time on small devices.

Fitting: each regime keeps its last `window` samples (`sliding_predictor_window`) and is refitted by
least squares every `refit_every` new samples (`sliding_refit_every`) once it holds `min_samples`
(`sliding_min_samples`). Until then it predicts with the warm prior, the scheduler's LatencyModel
(which the base scheduler itself refines by EWMA). Periodic refits over a window, rather than recursive
least squares, are our choice: simpler, and the window forgets a device that changed speed.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from sliceserve.core.latency import LatencyModel

DECODE_ONLY, MIXED, PREFILL_HEAVY = "decode-only", "mixed", "prefill-heavy"
REGIMES = (DECODE_ONLY, MIXED, PREFILL_HEAVY)
FEATURE_NAMES = ("intercept", "total_tokens", "prefill_tokens", "decode_tokens", "decode_context",
                 "prefill_context", "num_prefills", "prefill_sq")
# Relative ridge strength on the standardised features: a numerical safeguard for collinear or
# never-varying columns, small enough not to bias a well-posed fit.
_RIDGE = 1e-6
_MIN_PREDICTION_S = 1e-6


@dataclass(frozen=True, slots=True)
class BatchFeatures:
    prefill_tokens: int = 0
    decode_tokens: int = 0
    decode_context: float = 0.0
    prefill_context: float = 0.0
    num_prefills: int = 0
    prefill_sq: float = 0.0

    @classmethod
    def of(cls, decode_ctxs: Iterable[int], chunks: Iterable[tuple[int, int]]) -> "BatchFeatures":
        """`decode_ctxs`: cached tokens of each decode; `chunks`: (tokens cached before, chunk length)."""
        dctx = list(decode_ctxs)
        ptok = pctx = psq = 0
        num = 0
        for cached, n in chunks:
            if n <= 0:
                continue
            num += 1
            ptok += n
            pctx += n * cached
            psq += n * n
        return cls(ptok, len(dctx), float(sum(dctx)), float(pctx), num, float(psq))

    @property
    def total_tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    def vector(self) -> list[float]:
        return [1.0, float(self.total_tokens), float(self.prefill_tokens), float(self.decode_tokens),
                self.decode_context, self.prefill_context, float(self.num_prefills), self.prefill_sq]


def regime_of(f: BatchFeatures, heavy_prefill_tokens: int) -> str:
    if f.prefill_tokens == 0:
        return DECODE_ONLY
    return PREFILL_HEAVY if f.prefill_tokens >= heavy_prefill_tokens else MIXED


class _RegimeModel:
    def __init__(self, window: int) -> None:
        self.xs: deque[list[float]] = deque(maxlen=window)
        self.ys: deque[float] = deque(maxlen=window)
        self.coef: list[float] | None = None
        self.since_fit = 0

    def refit(self) -> None:
        x = np.asarray(self.xs, dtype=float)
        y = np.asarray(self.ys, dtype=float)
        # Standardise columns so the ridge is scale-free; never-varying columns scale to 1 and the ridge
        # keeps their coefficient at 0 (the intercept column is left unpenalised).
        scale = np.abs(x).max(axis=0)
        scale[scale == 0] = 1.0
        xs = x / scale
        penalty = np.sqrt(_RIDGE * len(y)) * np.eye(x.shape[1])[1:]
        a = np.vstack([xs, penalty])
        b = np.concatenate([y, np.zeros(x.shape[1] - 1)])
        beta, *_ = np.linalg.lstsq(a, b, rcond=None)
        self.coef = list(beta / scale)
        self.since_fit = 0


class BatchLatencyPredictor:
    def __init__(self, prior: LatencyModel, *, heavy_prefill_tokens: int = 128, window: int = 256,
                 min_samples: int = 24, refit_every: int = 16) -> None:
        if min(heavy_prefill_tokens, window, min_samples, refit_every) <= 0:
            raise ValueError("predictor sizes (heavy_prefill_tokens, window, min_samples, refit_every) "
                             "must be positive")
        if min_samples > window:
            raise ValueError(f"predictor min_samples ({min_samples}) cannot exceed its window ({window})")
        self.prior = prior
        self.heavy_prefill_tokens = heavy_prefill_tokens
        self.min_samples = min_samples
        self.refit_every = refit_every
        self.models = {r: _RegimeModel(window) for r in REGIMES}

    def observe(self, features: BatchFeatures, seconds: float) -> None:
        if not (seconds > 0 and features.total_tokens > 0):
            return
        model = self.models[regime_of(features, self.heavy_prefill_tokens)]
        model.xs.append(features.vector())
        model.ys.append(seconds)
        model.since_fit += 1
        if len(model.ys) >= self.min_samples and (model.coef is None or model.since_fit >= self.refit_every):
            model.refit()

    def is_fitted(self, regime: str) -> bool:
        return self.models[regime].coef is not None

    def predict(self, f: BatchFeatures) -> float:
        if f.total_tokens == 0:
            return 0.0
        coef = self.models[regime_of(f, self.heavy_prefill_tokens)].coef
        if coef is None:
            k = f.decode_tokens
            return self.prior.iteration_time(k, f.decode_context / k if k else 0.0, f.prefill_tokens)
        return max(_MIN_PREDICTION_S, sum(c * v for c, v in zip(coef, f.vector())))

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """`predict` for many batches at once: one row per batch, columns as `BatchFeatures.vector()`.
        (The policy ranks every waiting request each iteration; row by row that dominated its cost.)"""
        x = np.asarray(x, dtype=float)
        out = np.empty(len(x))
        prefill = x[:, 2]
        regimes = np.where(prefill == 0, 0, np.where(prefill >= self.heavy_prefill_tokens, 2, 1))
        for idx, regime in enumerate(REGIMES):
            rows = regimes == idx
            if not rows.any():
                continue
            coef = self.models[regime].coef
            if coef is not None:
                out[rows] = np.maximum(_MIN_PREDICTION_S, x[rows] @ np.asarray(coef))
                continue
            k = x[rows, 3]
            n = prefill[rows]
            memo: dict[tuple[float, float], float] = {}
            for ki, dc in zip(k, x[rows, 4]):
                if (ki, dc) not in memo:
                    memo[(ki, dc)] = self.prior.decode_time(int(ki), dc / ki if ki else 0.0)
            decode = np.array([memo[(ki, dc)] for ki, dc in zip(k, x[rows, 4])])
            p = self.prior
            base, tokens, _ = p.prefill_shape
            pre = np.where(n > 0, p.prefill_factor * (p.prefill_base_s * base + (p.prefill_per_token_s * n
                                                      + p.prefill_quad_s * n * n) * tokens), 0.0)
            out[rows] = decode + pre
        out[x[:, 1] == 0] = 0.0
        return out

    def coefficients(self, regime: str) -> dict[str, float] | None:
        coef = self.models[regime].coef
        return None if coef is None else dict(zip(FEATURE_NAMES, coef))


def mean_abs_pct_error(predictor: BatchLatencyPredictor, samples: Sequence[tuple[BatchFeatures, float]]) -> float:
    """Mean |predicted - measured| / measured over held-out samples."""
    if not samples:
        raise ValueError("no samples to score the predictor on")
    return float(np.mean([abs(predictor.predict(f) - y) / y for f, y in samples]))
