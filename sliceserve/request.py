"""A request's life: what was asked, what the scheduler decided so far, and when each token came."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from sliceserve.slo import SLO


class RequestStatus(enum.Enum):
    WAITING = "waiting"        # not started, or preempted by recompute (KV dropped)
    RUNNING = "running"        # holds KV and is eligible for this iteration
    PAUSED = "paused"          # implicitly preempted: keeps its KV, waits to be resumed
    PARKED = "parked"          # best effort set aside (`Scheduler.park`): no KV, out of the policy's queues
    FINISHED = "finished"      # ended: see finish_reason

    @property
    def is_finished(self) -> bool:
        return self is RequestStatus.FINISHED


class FinishReason(enum.Enum):
    STOP = "stop"              # stop token or stop string
    LENGTH = "length"          # max_tokens reached
    ABORT = "abort"            # cancelled by the client or the server
    REJECTED = "rejected"      # never admitted (SLO impossible, too long, queue full)
    ERROR = "error"            # the iteration it was in failed


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    # Logit processing (sliceserve.model.logits_processing), in vLLM's / OpenAI's meaning.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    # llama.cpp's (Ollama's) window instead: the three penalties count only the last `penalty_last_n` tokens
    # of prompt and output together (0: no penalty). None: OpenAI's and vLLM's meaning above (repetition over
    # the whole prompt and output, frequency and presence over the output).
    penalty_last_n: int | None = None
    logit_bias: dict[int, float] | None = None
    min_tokens: int = 0
    min_p: float = 0.0
    # Log-probabilities of the raw model distribution: the sampled token and this many alternatives
    # (0: the sampled token only; None: none); prompt_logprobs: the same for every prompt position.
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    # Constrained decoding (sliceserve.model.guided.StructuredOutputs): a grammar every token must obey.
    structured_outputs: Any = None
    n: int = 1                   # samples per prompt (the offline LLM and the server expand them)

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        self.stop = tuple(self.stop)
        self.stop_token_ids = tuple(self.stop_token_ids)
        self._check_processing()

    def _check_processing(self) -> None:
        if not -2.0 <= self.presence_penalty <= 2.0 or not -2.0 <= self.frequency_penalty <= 2.0:
            raise ValueError("presence_penalty and frequency_penalty must be in [-2, 2]")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if self.penalty_last_n is not None and self.penalty_last_n < 0:
            raise ValueError(f"penalty_last_n must be >= 0 (0: no penalty), got {self.penalty_last_n!r}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens!r}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p!r}")
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(self, name)
            if k is not None and not 0 <= k <= 20:
                raise ValueError(f"{name} must be in [0, 20], got {k!r}")
        if self.logit_bias:
            self.logit_bias = {int(t): float(b) for t, b in self.logit_bias.items()}
            if any(not -100.0 <= b <= 100.0 for b in self.logit_bias.values()):
                raise ValueError("logit_bias values must be in [-100, 100]")
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be a positive integer, got {self.n!r}")

    @property
    def needs_processing(self) -> bool:
        """Whether logits need more than temperature / top-k / top-p (the fast greedy path is off)."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0
                    or self.logit_bias or self.min_tokens or self.min_p or self.structured_outputs is not None)


@dataclass(slots=True, eq=False)
class Request:
    req_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_s: float
    slo: SLO = field(default_factory=SLO)
    slo_class: str = "default"
    utility: float = 1.0
    priority: int = 0            # vLLM-style: lower runs first
    eos_token_id: int | None = None
    # An embedding request: prefill the prompt, pool its last hidden states into one vector, finish without
    # decoding (max_tokens stays 1: the KV bound the scheduler reserves is the prompt's plus one slot).
    embed: bool = False

    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    error: str | None = None
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    num_preemptions: int = 0
    # Wall or virtual time of every output token, and of the end.
    token_times_s: list[float] = field(default_factory=list)
    first_scheduled_s: float | None = None
    finished_s: float | None = None
    # What the latency model predicted at admission (TTFT from arrival, TPOT of the batch it joined), so any
    # client can audit the model against the measured values.
    predicted_ttft_s: float | None = None
    predicted_tpot_s: float | None = None
    embedding: list[float] | None = None   # the pooled vector of an `embed` request, once computed
    # Filled by EngineCore from what the executor reports (sampling_params.logprobs / prompt_logprobs):
    # per output token (token logprob, [(id, logprob) of the top alternatives]); per prompt position
    # likewise, None for position 0 (nothing predicts it).
    logprobs: list[tuple[float, list[tuple[int, float]]]] = field(default_factory=list)
    prompt_logprobs: list[tuple[float, list[tuple[int, float]]] | None] = field(default_factory=list)
    num_cached_tokens: int | None = None   # prompt tokens found in the prefix cache when first scheduled
    # Best effort under overload (`overload: best_effort`): admission found its SLO out of reach now, so the
    # scheduler parks it on arrival (`Scheduler.park`) instead of queueing it beside feasible work.
    park_on_arrival: bool = False
    parked_s: float | None = None   # when it was last parked, if ever

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def max_tokens(self) -> int:
        return self.sampling_params.max_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens still to feed before the next token can be sampled (1 for a decode)."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_prefilling(self) -> bool:
        """True while more than the last token is missing from the KV (a prompt, or a recompute)."""
        return self.num_uncomputed_tokens > 1

    @property
    def remaining_output_tokens(self) -> int:
        return self.sampling_params.max_tokens - len(self.output_token_ids)

    @property
    def max_total_tokens(self) -> int:
        """Worst-case context: prompt plus every token it may generate."""
        return len(self.prompt_token_ids) + self.sampling_params.max_tokens

    def token_ids(self, start: int, stop: int) -> list[int]:
        """Tokens [start, stop) of prompt + output, without building the concatenation."""
        n_prompt = len(self.prompt_token_ids)
        if stop <= n_prompt:
            return self.prompt_token_ids[start:stop]
        if start >= n_prompt:
            return self.output_token_ids[start - n_prompt : stop - n_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[: stop - n_prompt]

    @property
    def ttft_s(self) -> float | None:
        return self.token_times_s[0] - self.arrival_s if self.token_times_s else None

    @property
    def ttft_deadline_s(self) -> float | None:
        """When the first token is due (arrival + TTFT bound); None without a TTFT bound. The one definition:
        policies, admission and metrics compare against this rather than re-adding the bound themselves."""
        return None if self.slo.ttft_s is None else self.arrival_s + self.slo.ttft_s
