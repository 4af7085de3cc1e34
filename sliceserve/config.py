"""Frozen configuration. `validate()` raises ValueError naming the field to fix."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class SchedulerConfig:
    policy: str = "slice"
    # Batch limits (vLLM's names). 16 sequences suits an edge device (PEERS.md, Orca section).
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    max_model_len: int = 4096
    # KV cache: the real engine sizes num_kv_blocks from memory; the simulator takes it as given.
    block_size: int = 16
    num_kv_blocks: int = 4096
    # Requests that may wait before new arrivals are refused (503 / rejected); 0 = unbounded.
    max_waiting: int = 0

    # Share KV blocks of repeated prompt prefixes (core/prefix_cache.py). Greedy outputs are identical with
    # and without it (tests/control/test_prefix_cache.py), but it stays off by default: the simulator's
    # workloads fill every prompt with the same dummy token, so caching would fake hits there. Turn it on
    # for the real engine (scheduler setting enable_prefix_caching=true).
    enable_prefix_caching: bool = False

    # vLLM-style: "fcfs" or "priority".
    vllm_mode: str = "fcfs"

    # Orca: admission reserves the worst case (prompt + max_tokens) of KV (Yu et al., OSDI'22).
    # FastServe (Wu et al., 2023): quantum of queue p is q0 * 2**p. The paper's code uses 10 ms on its GPU;
    # None means "one predicted decode iteration of this device" (scaled, as PEERS.md asks).
    fastserve_q0_s: float | None = None
    fastserve_num_queues: int = 6
    fastserve_starvation_s: float = 3.0

    # SLICE (arXiv 2510.18544, SLICE.md); why each default, in core/slice/__init__.py's docstring.
    slice_period_s: float | None = None  # cycle P; None: 1 s, or 2 x p(256) where prefill is slower (slice.py)
    slice_margin: float = 0.0           # cycle test: T(S) <= P * (1 - margin)
    slice_layout: str = "spread"        # spread | prefix | nested
    slice_misfit: str = "skip"          # skip | stop
    slice_min_rate: int = 1             # decode steps per cycle for requests without a TPOT SLO
    slice_feedback: bool = True
    slice_headroom: float = 0.02        # share of each member's TPOT the per-iteration guard keeps spare
    slice_backfill_order: str = "srpt"  # srpt | rank: order in which best effort gets leftover capacity
    slice_drift_tolerance: float = 0.1  # rebuild when the last full cycle took > P * (1 + this)
    slice_lag_window: int = 8           # tokens over which a member's recent TPOT is checked
    slice_catchup_factor: int = 2       # a request may be given at most this x its demand to catch up
    slice_bank_tokens: int = 16         # TPOTs of slack top-density members keep from lower-density work; 0 = off
    slice_bank_tightest: bool = True    # reserve at most slice_bank_tokens x the tightest TPOT seen
    slice_reject_lost: bool = True      # refuse requests whose TTFT has passed without a first token
    slice_rank: str = "work"            # selection order: rate (U / v, the paper) | work (U / tokens left)
    slice_lend_reserve: bool = True     # light load: a prompt's last chunk due before the reserve rebanks may spend it
    slice_drop_lost: str = "reject"     # off | reject | relegate | park | hopeless: requests whose SLO is lost (core/slice/lost.py)
    slice_wide_columns: bool = False    # the mask may stack slow rows into wide columns (core/slice/wide.py)
    slice_fresh_order: str = "off"      # off | progress | deadline: order among never-started equals (core/slice/fresh.py)
    slice_started_first: str = "all"    # all | valued: whose started streams outrank newcomers (core/slice/fresh.py)
    slice_sit_out: str = "column"       # column | line: slack lower-density members need to yield to a prompt (fill.py)

    # Sarathi-Serve (Agrawal et al., OSDI'24): floor of the per-iteration prefill budget, in tokens.
    sarathi_min_chunk: int = 32
    # SLO-aware simulated annealing (Huang et al., 2025); see core/policies/annealing.py for each choice.
    annealing_iterations: int = 100       # candidate states evaluated per search
    annealing_t0: float = 0.05            # initial temperature, relative to the current objective
    annealing_cooling: float = 0.95       # geometric cooling factor per iteration
    annealing_batch_move_prob: float = 0.2  # share of moves that change the batch size instead of swapping
    annealing_window: int = 32            # waiting requests the search orders; the rest stay FCFS behind
    annealing_default_output_len: int | None = None  # prior output length; None = the request's max_tokens
    annealing_seed: int = 0
    # SlidingServe (2026 seed); see core/policies/sliding.py and core/sliding/ for each choice.
    sliding_margin: float = 0.05          # share of every deadline budget held back for prediction error
    sliding_chunk_step: int = 16          # chunk-size grid step of the SlidingChunker's search, tokens
    sliding_min_chunk: int = 16           # prefill tokens granted when every decode is late anyway
    sliding_tpot_floor: float = 1.0       # a late decode's per-iteration budget, as a share of its TPOT
    sliding_risk_factor: float = 0.5      # at risk when slack < (1 + this) * predicted time needed
    sliding_relegate_missed: bool = True  # requests that cannot meet their deadline go behind the rest
    sliding_admit_check: bool = True     # admit only while the decode batch keeps its TPOTs
    sliding_knapsack_bins: int = 100      # discretisation of the knapsack capacity
    sliding_heavy_prefill_tokens: int = 128  # prefill tokens from which a batch is "prefill-heavy"
    sliding_predictor_window: int = 256   # measured iterations kept per regime
    sliding_min_samples: int = 24         # samples before a regime's fit replaces the prior
    sliding_refit_every: int = 16         # new samples between refits
    # SCORPIO (arXiv 2505.23022) and QoServe/Niyama (arXiv 2503.22562); see their policy modules.
    scorpio_reject: bool = True           # TTFT guard refuses requests whose TTFT is already infeasible
    scorpio_margin: float = 0.05          # share of each TPOT held back in credits and VBS admission
    scorpio_credit_cap: float = 2.0       # most decode credit a request may bank (bounds catch-up bursts)
    qoserve_alpha: float = 1.0            # hybrid key: deadline + alpha x predicted remaining prefill time
    qoserve_relegate: bool = True         # relegate requests whose deadline is already infeasible

    def validate(self) -> "SchedulerConfig":
        positive_ints = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size",
                         "num_kv_blocks", "fastserve_num_queues", "slice_min_rate")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"config {name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_waiting, int) or self.max_waiting < 0:
            raise ValueError(f"config max_waiting must be >= 0 (0 = unbounded), got {self.max_waiting!r}")
        for name in ("fastserve_starvation_s", "slice_period_s"):
            value = getattr(self, name)
            if value is None and name == "slice_period_s":
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"config {name} must be a positive number of seconds, got {value!r}")
        if self.fastserve_q0_s is not None and not self.fastserve_q0_s > 0:
            raise ValueError(f"config fastserve_q0_s must be positive or unset, got {self.fastserve_q0_s!r}")
        for name in ("slice_margin", "slice_headroom"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"config {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (isinstance(self.slice_bank_tokens, int) and self.slice_bank_tokens >= 0):
            raise ValueError(f"config slice_bank_tokens must be an integer >= 0, got {self.slice_bank_tokens!r}")
        if not 0 <= self.slice_drift_tolerance:
            raise ValueError(f"config slice_drift_tolerance must be >= 0, got {self.slice_drift_tolerance!r}")
        for name in ("slice_lag_window", "slice_catchup_factor"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < (2 if name == "slice_lag_window" else 1):
                raise ValueError(f"config {name} must be an integer >= {2 if name == 'slice_lag_window' else 1}, "
                                 f"got {getattr(self, name)!r}")
        choices = {"vllm_mode": ("fcfs", "priority"), "slice_layout": ("prefix", "spread", "nested"),
                   "slice_misfit": ("skip", "stop"), "slice_backfill_order": ("srpt", "rank"),
                   "slice_rank": ("rate", "work"),
                   "slice_drop_lost": ("off", "reject", "relegate", "park", "hopeless"),
                   "slice_fresh_order": ("off", "progress", "deadline"),
                   "slice_started_first": ("all", "valued"),
                   "slice_sit_out": ("column", "line")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"config {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        self._validate_sarathi_annealing()
        self._validate_sliding()
        if not 0 <= self.scorpio_margin < 1:
            raise ValueError(f"config scorpio_margin must be in [0, 1), got {self.scorpio_margin!r}")
        if not self.scorpio_credit_cap >= 1:
            raise ValueError(f"config scorpio_credit_cap must be >= 1, got {self.scorpio_credit_cap!r}")
        if not (math.isfinite(self.qoserve_alpha) and self.qoserve_alpha >= 0):
            raise ValueError(f"config qoserve_alpha must be a finite number >= 0, got {self.qoserve_alpha!r}")
        return self

    def _validate_sarathi_annealing(self) -> None:
        for name in ("sarathi_min_chunk", "annealing_iterations", "annealing_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"config {name} must be a positive integer, got {value!r}")
        if self.annealing_default_output_len is not None and (
                not isinstance(self.annealing_default_output_len, int) or self.annealing_default_output_len <= 0):
            raise ValueError("config annealing_default_output_len must be a positive integer or unset, "
                             f"got {self.annealing_default_output_len!r}")
        if not (isinstance(self.annealing_t0, (int, float)) and math.isfinite(self.annealing_t0)
                and self.annealing_t0 > 0):
            raise ValueError(f"config annealing_t0 must be a positive number, got {self.annealing_t0!r}")
        if not 0 < self.annealing_cooling < 1:
            raise ValueError(f"config annealing_cooling must be in (0, 1), got {self.annealing_cooling!r}")
        if not 0 <= self.annealing_batch_move_prob <= 1:
            raise ValueError("config annealing_batch_move_prob must be in [0, 1], "
                             f"got {self.annealing_batch_move_prob!r}")
        if not isinstance(self.annealing_seed, int):
            raise ValueError(f"config annealing_seed must be an integer, got {self.annealing_seed!r}")

    def _validate_sliding(self) -> None:
        for name in ("sliding_chunk_step", "sliding_knapsack_bins", "sliding_heavy_prefill_tokens",
                     "sliding_predictor_window", "sliding_min_samples", "sliding_refit_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"config {name} must be a positive integer, got {value!r}")
        if not isinstance(self.sliding_min_chunk, int) or self.sliding_min_chunk < 0:
            raise ValueError(f"config sliding_min_chunk must be an integer >= 0, got {self.sliding_min_chunk!r}")
        if self.sliding_min_samples > self.sliding_predictor_window:
            raise ValueError(f"config sliding_min_samples ({self.sliding_min_samples}) cannot exceed "
                             f"sliding_predictor_window ({self.sliding_predictor_window})")
        if not 0 <= self.sliding_margin < 1:
            raise ValueError(f"config sliding_margin must be in [0, 1), got {self.sliding_margin!r}")
        for name in ("sliding_tpot_floor", "sliding_risk_factor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"config {name} must be a number >= 0, got {value!r}")

    def with_overrides(self, **overrides: object) -> "SchedulerConfig":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown scheduler setting(s): {', '.join(unknown)}")
        return replace(self, **overrides).validate()
