"""The executor seam: what every backend provides and what the engine consumes.

A backend (torch: `model/`, llama.cpp: `llamacpp/`, the simulator: `sim/`) implements `Executor`; a backend
that loads real weights returns them as a `LoadedModel` (its executor, tokenizer, KV geometry and what it
can and cannot do). The engine, the offline `LLM`, the bench, the server and the profiler run a model through
this module's names only: no backend imports the engine, and the engine picks a backend in one place
(`engine/backend.py:load_backend`).

This module sits just above `core/` (it speaks `SchedulerOutput` / `ModelOutput`) and below the engine and
every backend (docs/ARCHITECTURE.md, "Layers"). It imports no torch and no backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from sliceserve.core.outputs import ModelOutput, SchedulerOutput


class Executor(Protocol):
    def execute(self, sched: SchedulerOutput) -> ModelOutput:
        """Run exactly the iteration described; free state of `sched.finished` and `sched.preempted`.
        Must not change any request."""
        ...


@dataclass
class LoadedModel:
    """A model ready for EngineCore: its executor, tokenizer and the KV geometry handed to the scheduler."""
    runner: Executor             # model.runner.ModelRunner or llamacpp.executor.LlamaCppExecutor
    tokenizer: Any               # a Hugging Face tokenizer (encode/decode, chat template, eos_token_id)
    eos_token_ids: list[int]
    num_kv_blocks: int
    block_size: int
    max_model_len: int
    model_name: str
    device: str
    dtype: str
    representation: str = ""     # weights' form: fp32, bf16, fp16 or int8-dynamic (model/quant/representation.py)
    backend: str = "torch"
    # Capabilities: what the scheduler must respect (check_scheduler_fits) and how the profiler drives it.
    max_num_seqs: int | None = None       # sequences the executor was opened for (None: no limit of its own)
    enable_prefix_caching: bool = True    # False: the executor holds only KV it computed itself
    # The runner as the profiler times it, wrapped: a synthetic request claims a context nothing computed, and
    # the view makes that context valid first, untimed (model/profiling_view.py, llamacpp/profiling.py).
    # None: time `runner` itself. A function of the runner: swapping in a runner of another kind (`replace`)
    # needs profiling_view=None or a view of its own.
    profiling_view: Callable[[Any], Executor] | None = None


def check_scheduler_fits(loaded: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Scheduler settings adjusted to what the executor supports: a llama.cpp context has a fixed number of
    sequence ids, and holds no KV it did not compute itself (no prefix cache sharing)."""
    limit = loaded.max_num_seqs
    wanted = settings.get("max_num_seqs")
    if limit is not None:
        if wanted is None:
            settings = {**settings, "max_num_seqs": limit}
        elif wanted > limit:
            raise ValueError(f"max_num_seqs {wanted} exceeds the {limit} sequences the model was opened with "
                             f"(load it with max_num_seqs >= {wanted})")
    if not loaded.enable_prefix_caching and settings.get("enable_prefix_caching"):
        settings = {**settings, "enable_prefix_caching": False}
    return settings


def profiling_executor(loaded: Any) -> Executor:
    """The executor the profiler times: the backend's profiling view when it offers one, else the runner."""
    view = getattr(loaded, "profiling_view", None)
    return view(loaded.runner) if view is not None else loaded.runner
