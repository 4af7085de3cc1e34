"""sliceserve: SLO-driven LLM serving for edge devices.

`from sliceserve import LLM, SamplingParams, StructuredOutputs` (imported on first use: the package
itself stays light for the simulator and the CLI).
"""
from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("sliceserve")
except metadata.PackageNotFoundError:   # a source tree that was never installed
    __version__ = "0.0.0+unknown"

_LAZY = {"LLM": "sliceserve.engine.llm", "SamplingParams": "sliceserve.request",
         "StructuredOutputs": "sliceserve.model.guided", "SLO": "sliceserve.slo"}
__all__ = ["LLM", "SamplingParams", "StructuredOutputs", "SLO", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sliceserve' has no attribute {name!r}")
