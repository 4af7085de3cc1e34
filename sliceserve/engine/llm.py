"""Offline inference: `LLM(model, policy).generate(prompts, ...)`, on the real engine and the wall clock.

Every prompt arrives at once (time 0) and the chosen policy schedules them exactly as the server would;
results come back in prompt order with their text, token ids, finish reason and timings.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from sliceserve.config import SchedulerConfig
from sliceserve.core.latency import LatencyModel, load_profile
from sliceserve.core.policies import make_scheduler
from sliceserve.engine.core import EngineCore, StepResult
from sliceserve.engine.wallclock import WallClockDriver
from sliceserve.executor_api import check_scheduler_fits
from sliceserve.request import Request, SamplingParams
from sliceserve.slo import BUILTIN_CLASSES, SLO

Prompt = str | list[int]


@dataclass(slots=True)
class RequestTimings:
    ttft_s: float | None       # arrival to first token
    tpot_s: float | None       # mean gap between output tokens, first to last (None with < 2 tokens)
    e2e_s: float | None        # arrival to end
    met: bool                  # every SLO bound held (always True without an SLO, False if it failed)


@dataclass(slots=True)
class SampleOutput:
    """One of a prompt's `n` samples."""
    text: str
    token_ids: list[int]
    finish_reason: str
    logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None   # per token, with sampling_params.logprobs
    error: str | None = None


@dataclass(slots=True)
class GenerationOutput:
    prompt: str | None
    prompt_token_ids: list[int]
    text: str
    token_ids: list[int]
    finish_reason: str          # stop | length | abort | rejected | error
    timings: RequestTimings
    error: str | None = None
    logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None
    # With sampling_params.prompt_logprobs: per prompt position (None for the first: nothing predicts it).
    prompt_logprobs: list | None = None
    outputs: list[SampleOutput] = field(default_factory=list)   # all n samples (the first is the above)


@dataclass(slots=True)
class EmbeddingOutput:
    prompt: str | None
    prompt_token_ids: list[int]
    embedding: list[float] | None   # L2-normalised mean of the prompt's last hidden states (None if it failed)
    finish_reason: str              # stop | abort | rejected | error
    timings: RequestTimings         # ttft_s = e2e_s: arrival to the vector
    error: str | None = None


def request_timings(req: Request) -> RequestTimings:
    """Timings of a finished request, with SLO attainment as SLICE.md defines it."""
    from sliceserve.metrics import request_metrics

    m = request_metrics(req)
    return RequestTimings(m.ttft_s, m.tpot_s, m.e2e_s, m.met)


def build_engine(loaded: Any, policy: str, latency: LatencyModel, **scheduler_settings: Any) -> EngineCore:
    """An EngineCore running `policy` on a loaded model; the KV geometry comes from the model."""
    scheduler_settings = check_scheduler_fits(loaded, scheduler_settings)
    config = SchedulerConfig(policy=policy).with_overrides(
        num_kv_blocks=loaded.num_kv_blocks, block_size=loaded.block_size, max_model_len=loaded.max_model_len,
        **scheduler_settings)
    return EngineCore(make_scheduler(policy, config, latency), loaded.runner)


def resolve_latency(loaded: Any, profile: str | os.PathLike | LatencyModel | None) -> LatencyModel:
    """A saved profile (path or built-in name) when given; else a few seconds of measurement."""
    if isinstance(profile, LatencyModel):
        return profile.copy()
    if profile is not None:
        return load_profile(str(profile))
    from sliceserve.model.profiler import quick_estimate

    return quick_estimate(loaded)


def _new_tokens(reqs: list[Request], on_tokens: Callable[[int, list[int]], None]) -> Callable[[StepResult], None]:
    """A driver's step hook that hands each request's new output tokens to `on_tokens(index, ids)`."""
    index = {r.req_id: i for i, r in enumerate(reqs)}
    told = [0] * len(reqs)

    def on_step(step: StepResult) -> None:
        for rid in step.sched.requests:
            i = index.get(rid)
            if i is not None and len(reqs[i].output_token_ids) > told[i]:
                new = reqs[i].output_token_ids[told[i]:]
                told[i] += len(new)
                on_tokens(i, new)

    return on_step


def _as_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    """One prompt (a string or a list of token ids) or a sequence of prompts -> a list of prompts."""
    if isinstance(prompts, str) or (prompts and all(isinstance(t, int) for t in prompts)):
        return [prompts]
    return list(prompts)


def _broadcast(value: Any, n: int, what: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"got {len(value)} {what} for {n} prompts; give one, or one per prompt")
        return list(value)
    return [value] * n


class LLM:
    def __init__(self, model: Any = None, policy: str = "slice", device: str = "cpu", dtype: str | None = None,
                 *, profile: str | os.PathLike | LatencyModel | None = None,
                 kv_cache_memory_bytes: int | None = None, max_model_len: int | None = None,
                 num_threads: int | None = None, backend: str = "torch", cuda_graphs: bool = True,
                 **scheduler_settings: Any) -> None:
        """`model`: a local HF directory or GGUF file (None = the embedded SmolLM2), or an already loaded
        model (sliceserve.executor_api.LoadedModel), so several engines can share one copy of the weights.
        `profile`: a latency profile JSON (from `sliceserve profile`) or a built-in name; without it the
        engine measures a quick estimate at start-up. `backend`: torch (sliceserve.model) or llamacpp
        (sliceserve.llamacpp, a GGUF file). `cuda_graphs`: torch on CUDA, decode steps as CUDA graphs.
        Other keywords are SchedulerConfig settings."""
        if model is None or isinstance(model, (str, os.PathLike)):
            from sliceserve.engine.backend import load_backend

            model = load_backend(backend, None if model is None else str(model), device=device, dtype=dtype,
                                 kv_cache_memory_bytes=kv_cache_memory_bytes, max_model_len=max_model_len,
                                 num_threads=num_threads, max_num_seqs=scheduler_settings.get("max_num_seqs"),
                                 cuda_graphs=cuda_graphs)
        self.model = model
        self.tokenizer = model.tokenizer
        self.latency = resolve_latency(model, profile)
        self.engine = build_engine(model, policy, self.latency, **scheduler_settings)
        self._ids = itertools.count()

    @property
    def scheduler(self):
        return self.engine.scheduler

    def encode(self, prompt: Prompt, use_chat_template: bool = False) -> list[int]:
        if not isinstance(prompt, str):
            if not all(isinstance(t, int) for t in prompt):
                raise ValueError("a prompt must be a string or a list of token ids")
            return list(prompt)
        if use_chat_template:
            if not getattr(self.tokenizer, "chat_template", None):
                raise ValueError("this model's tokenizer has no chat template; call without use_chat_template")
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(prompt))

    def _sampling(self, params: SamplingParams) -> tuple[SamplingParams, int | None]:
        """The request's eos id, and its params with the model's other eos ids as stop tokens."""
        eos = list(self.model.eos_token_ids)
        if params.ignore_eos or len(eos) <= 1:
            return params, (eos[0] if eos else None)
        extra = tuple(t for t in eos[1:] if t not in params.stop_token_ids)
        return replace(params, stop_token_ids=params.stop_token_ids + extra), eos[0]

    def make_requests(self, prompts: Prompt | Sequence[Prompt], sampling_params=None, slos=None,
                      slo_classes=None, use_chat_template: bool = False) -> list[Request]:
        """Requests for `prompts`, all arriving at time 0 (the batch is known up front)."""
        prompts = _as_list(prompts)
        n = len(prompts)
        params_list = _broadcast(sampling_params if sampling_params is not None else SamplingParams(), n,
                                 "sampling_params")
        slo_list = _broadcast(slos, n, "slos")
        class_list = _broadcast(slo_classes, n, "slo_classes")
        reqs = []
        for prompt, params, slo, cls_name in zip(prompts, params_list, slo_list, class_list):
            utility, base = 1.0, SLO()
            if cls_name is not None:
                if cls_name not in BUILTIN_CLASSES:
                    raise ValueError(f"unknown SLO class {cls_name!r}; known: {', '.join(BUILTIN_CLASSES)}")
                base, utility = BUILTIN_CLASSES[cls_name].slo, BUILTIN_CLASSES[cls_name].utility
            params, eos = self._sampling(params)
            if params.structured_outputs is not None:   # compile now: a bad grammar fails here, not mid-run
                from sliceserve.model.guided import compile_matcher

                compile_matcher(params.structured_outputs, self.tokenizer)
            ids = self.encode(prompt, use_chat_template)
            for i in range(params.n):
                # Samples of one prompt differ: each its own seed (seed + i when the caller fixed one).
                own = params if params.seed is None or i == 0 else replace(params, seed=params.seed + i)
                reqs.append(Request(f"gen-{next(self._ids)}", list(ids), own, 0.0,
                                    slo=base.merged(slo) if slo is not None else base,
                                    slo_class=cls_name or "default", utility=utility, eos_token_id=eos))
        return reqs

    def generate(self, prompts: Prompt | Sequence[Prompt], sampling_params: SamplingParams | Sequence[
                 SamplingParams] | None = None, slos: SLO | Sequence[SLO | None] | None = None,
                 slo_classes: str | Sequence[str | None] | None = None,
                 use_chat_template: bool = False,
                 on_tokens: Callable[[int, list[int]], None] | None = None) -> list[GenerationOutput]:
        """Generate for every prompt (a string or a list of token ids); results in prompt order.
        `on_tokens(i, new_token_ids)`: called after each step for every sequence that got tokens in it, `i`
        its place among all the sequences (prompt order, `n` per prompt), so a caller can show them as they
        come (`sliceserve generate`)."""
        prompts = _as_list(prompts)
        reqs = self.make_requests(prompts, sampling_params, slos, slo_classes, use_chat_template)
        WallClockDriver(self.engine, on_step=None if on_tokens is None else _new_tokens(reqs, on_tokens)).run(reqs)
        outputs, i = [], 0
        for p in prompts:
            n = reqs[i].sampling_params.n
            outputs.append(self._output(reqs[i:i + n], p if isinstance(p, str) else None))
            i += n
        return outputs

    def embed(self, prompts: Prompt | Sequence[Prompt], slo_class: str | None = "embedding",
              slo: SLO | None = None) -> list[EmbeddingOutput]:
        """Embeddings of every prompt (a string or token ids), in prompt order: prefill-only requests through
        the same scheduler, in the `embedding` class by default (sliceserve.model.pooling: the pooling)."""
        if getattr(self.model, "backend", "torch") != "torch":
            raise ValueError(f"embeddings need the torch backend (its runner pools hidden states); this LLM runs "
                             f"{self.model.backend}")
        prompts = _as_list(prompts)
        reqs = self.make_requests(prompts, SamplingParams(max_tokens=1), slo, slo_class)
        for req in reqs:
            req.embed = True
        WallClockDriver(self.engine).run(reqs)
        return [EmbeddingOutput(p if isinstance(p, str) else None, list(r.prompt_token_ids), r.embedding,
                                r.finish_reason.value if r.finish_reason is not None else "abort",
                                request_timings(r), r.error) for r, p in zip(reqs, prompts)]

    def _sample(self, req: Request) -> SampleOutput:
        text = self.tokenizer.decode(req.output_token_ids, skip_special_tokens=True)
        # A stop string ends the text (as in vLLM): cut at the earliest one that occurs.
        cuts = [text.find(s) for s in req.sampling_params.stop if s and s in text]
        if cuts:
            text = text[: min(cuts)]
        reason = req.finish_reason.value if req.finish_reason is not None else "abort"
        lps = list(req.logprobs) if req.sampling_params.logprobs is not None else None
        return SampleOutput(text, list(req.output_token_ids), reason, lps, req.error)

    def _output(self, reqs: list[Request], prompt: str | None) -> GenerationOutput:
        samples = [self._sample(r) for r in reqs]
        first, s0 = reqs[0], samples[0]
        prompt_lps = list(first.prompt_logprobs) if first.sampling_params.prompt_logprobs is not None else None
        return GenerationOutput(prompt, list(first.prompt_token_ids), s0.text, s0.token_ids, s0.finish_reason,
                                request_timings(first), s0.error, s0.logprobs, prompt_lps, samples)
