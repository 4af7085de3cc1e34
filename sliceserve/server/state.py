"""What one server process holds: settings, the loaded model, the async engine, metrics and SLO classes."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sliceserve.core.latency import LatencyModel
from sliceserve.engine.async_engine import AsyncEngine
from sliceserve.metrics.prometheus import ServerMetrics
from sliceserve.server.admission import drain_estimate, lost_work_config, make_admit
from sliceserve.server.settings import ServerSettings
from sliceserve.server.validation import longest_token_chars
from sliceserve.slo import SLOClass

log = logging.getLogger(__name__)


@dataclass
class ServingState:
    settings: ServerSettings
    loaded: Any                      # sliceserve.executor_api.LoadedModel
    engine: AsyncEngine
    metrics: ServerMetrics
    model_name: str
    classes: dict[str, SLOClass] = field(default_factory=dict)
    activity: Any = None             # sliceserve.server.dashboard.ActivityRecorder, once attached
    # The vocabulary's longest token in characters: bounds a prompt's tokens before tokenising it.
    max_token_chars: int | None = None

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def vocab_size(self) -> int:
        """Token ids valid for both the tokenizer and the model's embedding table."""
        return min(len(self.tokenizer), getattr(self.loaded.runner, "vocab_size", len(self.tokenizer)))

    @property
    def max_model_len(self) -> int:
        return self.engine.core.scheduler.config.max_model_len


def load_model(settings: ServerSettings) -> Any:
    from sliceserve.engine.backend import load_backend

    return load_backend(settings.backend, settings.model, device=settings.device, dtype=settings.dtype,
                        kv_cache_memory_bytes=settings.kv_cache_memory_bytes, block_size=settings.block_size,
                        max_model_len=settings.max_model_len, num_threads=settings.num_threads,
                        memory_limit_bytes=settings.memory_limit_bytes(), max_num_seqs=settings.max_num_seqs,
                        cuda_graphs=settings.cuda_graphs)


def resolve_latency(settings: ServerSettings, loaded: Any, latency: LatencyModel | None) -> LatencyModel:
    from sliceserve.engine.llm import resolve_latency as _resolve

    if latency is not None:
        return latency.copy()
    if settings.latency_profile is None and not settings.calibrate:
        raise ValueError("no latency model: give latency_profile (a file from `sliceserve profile`) "
                         "or leave calibrate on")
    return _resolve(loaded, settings.latency_profile)


def build_state(settings: ServerSettings, loaded: Any | None = None,
                latency: LatencyModel | None = None) -> ServingState:
    """Load the model (unless given), find its latency model, and wire scheduler, engine and metrics.
    The engine thread starts with the app (see app.lifespan)."""
    from sliceserve.engine.llm import build_engine

    if loaded is None:
        loaded = load_model(settings)
    lat = resolve_latency(settings, loaded, latency)
    log.info("latency model %s: decode l(1)=%.1f ms, prefill(128)=%.1f ms", lat.name,
             lat.decode_time(1) * 1e3, lat.prefill_time(128) * 1e3)
    core = build_engine(loaded, settings.policy, lat, max_num_seqs=settings.max_num_seqs,
                        max_num_batched_tokens=settings.max_num_batched_tokens,
                        max_waiting=settings.max_waiting,
                        **{"enable_prefix_caching": settings.enable_prefix_caching,
                           **lost_work_config(settings.overload), **settings.scheduler})
    if hasattr(core.scheduler, "period_s"):
        log.info("SLICE cycle P = %.2f s", core.scheduler.period_s)
    model_name = settings.served_model_name or getattr(loaded, "model_name", None) or "sliceserve"
    metrics = ServerMetrics(model_name)
    engine = AsyncEngine(core, admit=make_admit(settings.max_waiting, settings.overload), observer=metrics,
                         max_queue_time_s=settings.max_queue_time_s)
    engine.retry_hint = drain_estimate
    if settings.idle_reprofile:
        from sliceserve.engine.reprofile import attach

        attach(engine, metrics.latency_audit, loaded)
    return ServingState(settings, loaded, engine, metrics, model_name, settings.classes(),
                        longest_token_chars(loaded.tokenizer))
