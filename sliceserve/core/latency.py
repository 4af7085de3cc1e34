"""Latency model: decode iteration time l(k, ctx) and prefill time p(n).

l(k, ctx) = table[k] + ctx_coef_s * k * ctx + ctx_iter_coef_s * L(ctx)
            (table: measured per batch size, linear past its end; ctx: the requests' mean context;
            L(ctx) = ctx, or the runner's padded length when it pads to `ctx_buckets`)
p(n, P)   = prefill_base_s + prefill_per_token_s * n + prefill_quad_s * n**2 + prefill_attn_s * pairs(n, P)
            (a chunk of n prompt tokens after P cached ones; pairs(n, P) = n * P + n * (n + 1) / 2, the
            (query, key) pairs its causal attention scores)
Two context slopes because devices differ: on a CPU attention work grows with every request's context
(k * ctx); on a launch-bound GPU a decode step's attention runs padded to the batch's context, so its time
grows with the context whatever the batch size (CUDA-graph decode on an H100: 3.2 ms at context 64, 5.7 ms at
1024, batch 1 and 8 alike). The fit keeps whichever the samples support (non-negative); a CPU's profile fits the
per-request slope alone (`fit(iteration_slope=False)`), since noise let a few-point fit hand it to the other one
(see `fit`). With CUDA graphs the runner pads contexts to buckets (sliceserve.model.cuda_graphs) and a step
costs what its bucket costs: the profile records the buckets, and the per-iteration term then uses the bucket's
length (H100 fidelity runs: iteration-time error 7.9-11.1% with a straight line through the context, 5.0-6.6%
with the buckets).
The attention term is why a prompt's later chunks cost more than its first: on the 2-vCPU CPU (int8, one thread)
a 512-token chunk took 691 ms after no cached token and 1604 ms after 1536 (1.16 us per pair, the same for
256-token chunks), while a model of n alone, calibrated online, charged every chunk the average: it
under-predicted long prompts' late chunks 2-3x, over-predicted short prompts and fresh chunks, and the
online prefill factor followed whichever the load served most (p(256) 1.3x a fresh profile after 7 min of
edge-mix; benchmarks/live_fidelity.py, docs/results/live-fidelity.md). The within-chunk part (n(n+1)/2) is the
same work, so one coefficient carries both: fitted from prefix-0 chunks alone it already predicts the prefix.
A mixed iteration costs l(k, ctx) + p(n, P) (the sum, as SLICE.md allows to start with): measured beside 1-8
decodes at context 300, chunks of 128-512 tokens cost within 7 % of it (noise level: benchmarks/mixed_cost.py).
Built from profiles (JSON), fitted by least squares from measured samples, calibrated online per term: l and p
each carry a factor (measured / profiled) that every measured iteration moves by one bounded step (`observe`),
and p's form (level, per-token and attention parts) is corrected online too, normalised so that its factor
still prices p(256).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from sliceserve.core.cpu_profiles import CPU_EPYC_INT8
from sliceserve.core.latency_fit import non_decreasing, relative_lstsq
from sliceserve.core.latency_shapes import attended_length, attention_pairs, prefill_shape

__all__ = ["BUILTIN_PROFILES", "FACTOR_BOUNDS", "IterationSample", "LatencyModel", "attended_length",
           "attention_pairs", "load_profile", "prefill_left_time", "prefill_shape"]


@dataclass(slots=True)
class IterationSample:
    num_decode: int
    decode_ctx: float          # mean context length of the decoding requests
    prefill_tokens: int
    seconds: float
    # Tokens already cached before the prompt chunk (its attention's prefix; several chunks: the effective
    # prefix, `prefill_shape`). The latency model charges pairs(prefill_tokens, prefill_ctx) attention pairs.
    prefill_ctx: float = 0.0
    decode_ctx_max: float | None = None   # longest context among the decodes (a bucket-padding runner pads to it)


@dataclass(slots=True)
class LatencyModel:
    decode_table_s: list[float]
    ctx_coef_s: float = 0.0
    prefill_base_s: float = 0.0
    prefill_per_token_s: float = 0.0
    prefill_quad_s: float = 0.0
    ctx_iter_coef_s: float = 0.0      # seconds per context token per iteration (see the module docstring)
    ctx_buckets: list[int] | None = None   # padded decode lengths of the runner (CUDA graphs); None: unpadded
    prefill_attn_s: float = 0.0       # seconds per (query, key) pair a prompt chunk's attention scores
    name: str = "custom"
    notes: str = ""
    ewma_alpha: float = field(default=0.2)
    # Online calibration, one factor per term (see `observe`): l(k, ctx) and p(n) as profiled, times these.
    decode_factor: float = 1.0
    prefill_factor: float = 1.0
    calibration_cap: float = 0.05     # the most one iteration moves a factor, in log space (0: calibration off)
    # The form of p learnt online (`observe`): its level, its per-token part (linear and quadratic) and its
    # attention part, each x these; normalised so that a first chunk of SHAPE_REFERENCE_TOKENS tokens is priced
    # by prefill_factor alone (prefill_factor stays "online p(256) / profiled p(256)").
    prefill_shape: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])

    def __post_init__(self) -> None:
        if not self.decode_table_s:
            raise ValueError("latency model needs at least one decode time (batch size 1)")
        if any(not (math.isfinite(t) and t > 0) for t in self.decode_table_s):
            raise ValueError("decode times must be positive seconds")
        self.decode_table_s = [float(t) for t in self.decode_table_s]
        if self.ctx_buckets is not None:
            if not self.ctx_buckets or any(not isinstance(b, int) or b <= 0 for b in self.ctx_buckets):
                raise ValueError(f"ctx_buckets must be positive integers, got {self.ctx_buckets!r}")
            self.ctx_buckets = sorted(self.ctx_buckets)
        if len(self.prefill_shape) != 3 or any(not (math.isfinite(x) and x > 0) for x in self.prefill_shape):
            raise ValueError(f"prefill_shape must be three positive factors, got {self.prefill_shape!r}")
        self.prefill_shape = [float(x) for x in self.prefill_shape]

    # --- prediction ----------------------------------------------------------------------------------
    def decode_time(self, k: int, ctx: float = 0.0, ctx_max: float | None = None) -> float:
        """Seconds for one decode iteration of k requests whose mean context is `ctx` tokens (and longest
        `ctx_max`, which a runner padding to context buckets pads the whole step to; None: unknown, `ctx`)."""
        if k <= 0:
            return 0.0
        return self.decode_factor * (self._level(k) + self.ctx_coef_s * k * ctx
                                     + self.ctx_iter_coef_s * attended_length(ctx, self.ctx_buckets, ctx_max))

    def column_time(self, k: int, ctx: float) -> float:
        """l(k, ctx) without the per-request context term, which SLICE's decode mask charges row by row
        (`row_ctx_coef_s`): a step's level plus its per-iteration context term at mean context `ctx`."""
        if k <= 0:
            return 0.0
        return self.decode_factor * (self._level(k) + self.ctx_iter_coef_s * attended_length(ctx, self.ctx_buckets))

    def column_times(self, first: int, last: int, ctx: float) -> list[float]:
        """`column_time(k, ctx)` for k = first..last (first >= 1) at once, the same floats (numpy's elementwise
        double arithmetic rounds as Python's does, operation for operation): SLICE's selection needs every
        column size up to the batch cap, 256 of them in benchmarks/scheduler_cost.py (issue 21)."""
        table = self.decode_table_s
        n = len(table)
        k = np.arange(first, last + 1)
        slope = self._slope_past_table()
        level = np.where(k <= n, np.asarray(table)[np.minimum(k, n) - 1], table[-1] + slope * (k - n))
        return (self.decode_factor * (level + self.ctx_iter_coef_s * attended_length(ctx, self.ctx_buckets))).tolist()

    @property
    def row_ctx_coef_s(self) -> float:
        """Seconds one request's context token adds to a decode step, calibration included."""
        return self.decode_factor * self.ctx_coef_s

    def _level(self, k: int) -> float:
        table = self.decode_table_s
        if k <= len(table):
            return table[k - 1]
        return table[-1] + self._slope_past_table() * (k - len(table))

    def _slope_past_table(self) -> float:
        """Seconds each request past the measured table adds to a step: its last measured step, never negative."""
        table = self.decode_table_s
        return max(0.0, table[-1] - table[-2]) if len(table) > 1 else table[-1]

    def prefill_time(self, n: int, prefix: float = 0.0) -> float:
        """Seconds for a chunk of `n` prompt tokens after `prefix` cached ones (0: a prompt's first chunk)."""
        if n <= 0:
            return 0.0
        base, tokens, attention = self.prefill_shape
        return self.prefill_factor * (self.prefill_base_s * base
                                      + (self.prefill_per_token_s * n + self.prefill_quad_s * n * n) * tokens
                                      + self.prefill_attn_s * attention_pairs(n, prefix) * attention)

    def prefill_parts(self, n: int, prefix: float = 0.0) -> tuple[float, float, float]:
        """p(n, prefix)'s three parts as profiled (no online factor or form): level, per-token, attention."""
        return (self.prefill_base_s, self.prefill_per_token_s * n + self.prefill_quad_s * n * n,
                self.prefill_attn_s * attention_pairs(n, prefix))

    def iteration_time(self, num_decode: int, decode_ctx: float, prefill_tokens: int,
                       decode_ctx_max: float | None = None, prefill_ctx: float = 0.0) -> float:
        return self.decode_time(num_decode, decode_ctx, decode_ctx_max) + self.prefill_time(prefill_tokens, prefill_ctx)

    def sample_time(self, sample: IterationSample) -> float:
        """The predicted time of an iteration of this shape."""
        return self.iteration_time(sample.num_decode, sample.decode_ctx, sample.prefill_tokens, sample.decode_ctx_max,
                                   sample.prefill_ctx)

    def alone_scales(self) -> tuple[float, float]:
        """(decode, prefill) multipliers that take this model's times to the device alone, as profiled idle: each
        online factor's part above 1 undone. The factors follow what iterations cost under the load of the
        moment (on the live CPU server the decode factor read 1.38 at the end of a run whose idle re-profiles
        timed decode at 0.80-1.15x the profile: docs/results/live-fidelity.md, run 25); a verdict that claims
        "even on an idle device" or "even alone" must not price that load in. A factor below 1 (a device faster
        than profiled) is kept."""
        return 1.0 / max(1.0, self.decode_factor), 1.0 / max(1.0, self.prefill_factor)

    # --- online calibration ------------------------------------------------------------------------
    def observe(self, sample: IterationSample) -> float:
        """Returns what the model predicted for this iteration before it learnt from it (for the audit).
        One bounded calibration step per measured iteration and term. A decode-only iteration moves the decode
        factor toward measured / predicted. An iteration that carries prefill moves the prefill factor toward
        what its measured time leaves once the (calibrated) decode part is taken out, weighted by prefill's share
        of the prediction, so a chunk beside a large decode batch barely moves it. Each step is an EWMA of the
        log-ratio, capped at `calibration_cap`, and each factor stays within FACTOR_BOUNDS. Neither term is
        rescaled by the other's error: scaling the whole model by the median ratio of mostly-decode iterations
        had ratcheted prefill estimates to 3-4x their measured time on a loaded CPU server."""
        decode = self.decode_time(sample.num_decode, sample.decode_ctx, sample.decode_ctx_max)
        prefill = self.prefill_time(sample.prefill_tokens, sample.prefill_ctx)
        if prefill <= 0:
            if decode > 0:
                self.decode_factor = _bounded(self.decode_factor * math.exp(self._step(sample.seconds / decode, 1.0)))
        else:
            left = max(sample.seconds - decode, 0.1 * prefill)
            step = self._step(left / prefill, prefill / (prefill + decode))
            self.prefill_factor = _bounded(self.prefill_factor * math.exp(step))
            self._reshape_prefill(sample.prefill_tokens, sample.prefill_ctx, step)
        return decode + prefill

    def _step(self, ratio: float, weight: float) -> float:
        """One calibration step in log space: the EWMA of the log-ratio, capped."""
        step = self.ewma_alpha * weight * math.log(ratio)
        return min(self.calibration_cap, max(-self.calibration_cap, step))

    def _reshape_prefill(self, n: int, prefix: float, step: float) -> None:
        """Moves p's form by what a chunk of `n` tokens after `prefix` says, once prefill_factor has taken
        `step`: each part's own factor (prefill_factor x its form) moves by step x its share of the chunk's price /
        the sum of the squared shares (normalised least mean squares): the chunk's price moves by `step` as
        before, but the parts that make it up move most. A profile fitted at idle had the level too high and
        the per-token part too low for a loaded server (run 7 of docs/results/live-fidelity.md, replayed: small
        prompts under-predicted by 7-10 %, chunks after a long prefix over-predicted by 8-12 %; with the form
        learnt online the prefill-bearing median error fell from 9.7 to 8.2 %, on llama.cpp from 9.2 to 6.5 %).
        Then normalised at the reference chunk, where the form's correction is 1."""
        parts = [f * p for f, p in zip(self.prefill_shape, self.prefill_parts(n, prefix))]
        total = sum(parts)
        if step == 0.0 or total <= 0:
            return
        shares = [p / total for p in parts]
        norm = sum(x * x for x in shares)
        shape = [_bounded(f * math.exp(step * (x / norm - 1.0))) for f, x in zip(self.prefill_shape, shares)]
        reference = self.prefill_parts(SHAPE_REFERENCE_TOKENS)
        profiled = sum(reference)
        level = sum(f * p for f, p in zip(shape, reference)) / profiled if profiled > 0 else 1.0
        self.prefill_shape = [f / level for f in shape]
        self.prefill_factor = _bounded(self.prefill_factor * level)

    def scale(self, ratio: float) -> None:
        """Every profiled time x `ratio` (a profile of a uniformly slower or faster device)."""
        self.decode_table_s = [t * ratio for t in self.decode_table_s]
        self.ctx_coef_s *= ratio
        self.ctx_iter_coef_s *= ratio
        self.prefill_base_s *= ratio
        self.prefill_per_token_s *= ratio
        self.prefill_quad_s *= ratio
        self.prefill_attn_s *= ratio

    # --- fitting -------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, samples: Iterable[IterationSample], name: str = "fitted", notes: str = "",
            ctx_buckets: list[int] | None = None, iteration_slope: bool = True) -> "LatencyModel":
        """Least squares on relative error (each sample weighted by 1 / its time: a 3 ms step mispredicted by
        1 ms matters as much as a 300 ms one by 100 ms): decode-only samples give one level per batch size plus
        the two context slopes (a slope the samples would make negative is dropped; levels then made
        non-decreasing in k); prefill-only samples give p(n, P): a level, a per-token slope and, once three
        shapes (n, P) differ, the attention pairs' coefficient (a slope that would come out negative is dropped).
        `iteration_slope=False` fits the per-request context slope alone (k * ctx), for a CPU, whose attention
        has no per-iteration part: the two columns differ only in how the slope grows with k, and with two
        contexts and a few % of timing noise the start-up estimate's fit gave the slope to the per-iteration
        column in 14-30 % of simulated start-ups (a per-request device, 5-10 % lognormal noise; fitting the
        per-request slope alone cut their mean error over k 1-8 and contexts 200-800 by 11 %), as it did on a
        live llama.cpp server (run 4 of docs/results/live-fidelity.md: 21 us a token per iteration, where its
        decodes under load fit 9 us per request and the online decode factor sat at 0.4-0.8 to make up for
        it). Decodes under load on the 2-vCPU CPU, torch and llama.cpp alike, fit the per-request slope alone as
        well as both (median error within 0.2 points over five live runs)."""
        samples = list(samples)
        decode = [s for s in samples if s.prefill_tokens == 0 and s.num_decode > 0]
        prefill = [s for s in samples if s.num_decode == 0 and s.prefill_tokens > 0]
        if not decode:
            raise ValueError("cannot fit a latency model without decode-only samples")
        max_k = max(s.num_decode for s in decode)
        ks = sorted({s.num_decode for s in decode})
        col = {k: i for i, k in enumerate(ks)}
        x = np.zeros((len(decode), len(ks) + 2))
        y = np.array([s.seconds for s in decode])
        for row, s in enumerate(decode):
            x[row, col[s.num_decode]] = 1.0
            x[row, -2] = s.num_decode * s.decode_ctx
            x[row, -1] = attended_length(s.decode_ctx, ctx_buckets, s.decode_ctx_max)
        coef = relative_lstsq(x if iteration_slope else x[:, :-1], y, keep=len(ks))
        ctx_coef = float(coef[len(ks)])
        ctx_iter = float(coef[len(ks) + 1]) if iteration_slope else 0.0
        counts = [sum(s.num_decode == k for s in decode) for k in ks]
        # More sequences never make a decode step cheaper: noisy levels (a CPU shared with other processes
        # once gave l(8) < l(1)) are replaced by their closest non-decreasing fit.
        monotone = non_decreasing([max(1e-6, float(coef[col[k]])) for k in ks], counts)
        levels = dict(zip(ks, monotone))
        # Batch sizes never measured are interpolated between their measured neighbours.
        table = [float(np.interp(k, ks, [levels[j] for j in ks])) for k in range(1, max_k + 1)]
        base = per_tok = attn = 0.0
        if prefill:
            n = np.array([s.prefill_tokens for s in prefill], dtype=float)
            pairs = np.array([attention_pairs(s.prefill_tokens, s.prefill_ctx) for s in prefill])
            shapes = {(s.prefill_tokens, s.prefill_ctx) for s in prefill}
            # The attention pairs replace the old n**2 column: at P = 0 they span the same curve, and the one
            # coefficient then also prices a chunk's prefix (see the module docstring).
            cols = [np.ones_like(n), n] + ([pairs] if len(shapes) >= 3 else [])
            pc = relative_lstsq(np.stack(cols, axis=1), np.array([s.seconds for s in prefill]), keep=1)
            base, per_tok = max(0.0, float(pc[0])), max(1e-9, float(pc[1]))
            attn = float(pc[2]) if len(pc) > 2 else 0.0
        return cls(table, ctx_coef, base, per_tok, 0.0, ctx_iter, list(ctx_buckets) if ctx_buckets else None,
                   name=name, notes=notes, prefill_attn_s=attn)

    # --- persistence ---------------------------------------------------------------------------------
    def copy(self) -> "LatencyModel":
        return LatencyModel(**asdict(self))   # asdict copies the lists

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyModel":
        known = {"decode_table_s", "ctx_coef_s", "prefill_base_s", "prefill_per_token_s", "prefill_quad_s",
                 "ctx_iter_coef_s", "prefill_attn_s", "ctx_buckets", "name", "notes", "ewma_alpha", "decode_factor",
                 "prefill_factor", "calibration_cap", "prefill_shape"}
        unknown = sorted(set(data) - known - {"samples", "device"})
        if unknown:
            raise ValueError(f"latency profile has unknown field(s): {', '.join(unknown)}")
        if "decode_table_s" not in data:
            raise ValueError("latency profile lacks decode_table_s")
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        Path(path).write_text(json.dumps({**self.to_dict(), **(extra or {})}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LatencyModel":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"latency profile file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"latency profile {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"latency profile {path} must be a JSON object")
        return cls.from_dict(data)


# Online calibration never takes a term below a quarter or above four times its profiled time: a larger gap
# means the profile is of another device or representation, which a re-profile must fix, not drift.
FACTOR_BOUNDS = (0.25, 4.0)
# The first chunk whose price prefill_factor alone sets (`LatencyModel._reshape_prefill`): /ready's p(256).
SHAPE_REFERENCE_TOKENS = 256


def _bounded(factor: float) -> float:
    low, high = FACTOR_BOUNDS
    return min(high, max(low, factor))


# The SLICE reference code's measured decode iterations on an RTX 4060 Ti with ChatGLM2-6B-INT4,
# batch sizes 1..15 (SLICE.md, from arXiv 2510.18544's code). The paper gives no prefill numbers: we
# assume 20 ms fixed plus 0.25 ms per prompt token (~4,000 tokens/s, typical of a 6B INT4 model on that
# GPU class) and no context term. Both are assumptions, not measurements.
_PAPER_4060TI_MS = [14, 27, 38, 50, 60, 72, 83, 125, 126, 123, 124, 125, 126, 123, 124]

BUILTIN_PROFILES: dict[str, LatencyModel] = {
    "paper-4060ti": LatencyModel(
        [ms / 1e3 for ms in _PAPER_4060TI_MS], 0.0, 0.020, 0.00025, 0.0, name="paper-4060ti",
        notes="SLICE reference decode table (RTX 4060 Ti, ChatGLM2-6B-INT4); prefill 20 ms + 0.25 ms/token assumed",
    ),
    # Measured: the CPU default (int8) on the embedded model, one thread, 2-vCPU EPYC (core/cpu_profiles.py).
    "cpu-epyc-int8": LatencyModel.from_dict(CPU_EPYC_INT8),
}


def load_profile(name_or_path: str) -> LatencyModel:
    """A built-in profile by name, or a JSON file written by `sliceserve profile`."""
    if name_or_path in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[name_or_path].copy()
    if name_or_path.endswith(".json") or Path(name_or_path).exists():
        return LatencyModel.load(name_or_path)
    raise ValueError(f"unknown latency profile {name_or_path!r}; built-in: {', '.join(BUILTIN_PROFILES)}, "
                     "or a JSON file from `sliceserve profile`")


def prefill_left_time(lat: LatencyModel, reqs: Iterable, chunk: int) -> float:
    """Seconds to prefill what is left of each request's prompt as the engine runs it: packed in order into
    iterations of at most `chunk` tokens (max_num_batched_tokens), each iteration priced as the model prices
    one (`prefill_shape`: its tokens, and each piece's attention over its own prompt's cached prefix). Not p of
    the summed tokens: that charges one iteration's super-linear cost to a queue the engine runs in chunks
    (1.5x the chunks' sum for 2000 queued tokens on the CPU profile) and attention between different prompts,
    which no chunk computes (~4.5 s for 3000 queued tokens once the model prices attention). Admission's
    estimate (core.feasibility) prices a queue with it, SLICE's hopeless test (core/slice/lost.py) one prompt."""
    total, pieces, room = 0.0, [], chunk
    for r in reqs:
        done = r.num_computed_tokens
        end = done + r.num_uncomputed_tokens
        while done < end:
            n = min(room, end - done)
            pieces.append((n, done))
            done, room = done + n, room - n
            if room == 0:
                total += lat.prefill_time(*prefill_shape(pieces))
                pieces, room = [], chunk
    return total + (lat.prefill_time(*prefill_shape(pieces)) if pieces else 0.0)
