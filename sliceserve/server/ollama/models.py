"""What `/api/tags`, `/api/ps` and `/api/show` say about the one served model, and Ollama's name matching."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from sliceserve.server.ollama.protocol import DEFAULTS
from sliceserve.server.protocol import APIError
from sliceserve.server.state import ServingState

# The Ollama API release whose routes and fields these mirror; clients gate features on it.
OLLAMA_API_VERSION = "0.6.0"
# The model never unloads (keep_alive has nothing to do): Ollama shows a far-future expiry for keep_alive -1.
_NEVER = "2318-01-01T00:00:00Z"
_STARTED = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def check(state: ServingState, name: str | None) -> None:
    """Ollama names carry a tag; `NAME` and `NAME:latest` both mean the served model."""
    if name is None or name not in (state.model_name, f"{state.model_name}:latest"):
        raise APIError(404, f"model {name!r} not found: this server serves {state.model_name!r}",
                       type="NotFoundError", param="model", code="model_not_found")


def _params(state: ServingState) -> int:
    model = getattr(state.loaded.runner, "model", None)
    return sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 0


def _path(state: ServingState) -> Path | None:
    if state.settings.model is not None:
        return Path(state.settings.model)
    try:
        from sliceserve.model.loader import default_model_path

        return Path(default_model_path())
    except (ImportError, ValueError):
        return None


@lru_cache(maxsize=4)
def _size(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def details(state: ServingState) -> dict[str, Any]:
    path = _path(state)
    n = _params(state)
    arch = getattr(getattr(state.loaded.runner, "model", None), "arch", None)
    family = getattr(arch, "model_type", None) or "llama"
    return {"parent_model": "", "format": "gguf" if path is not None and path.suffix == ".gguf" else "safetensors",
            "family": family, "families": [family],
            "parameter_size": f"{n / 1e6:.0f}M" if n < 1e9 else f"{n / 1e9:.1f}B",
            "quantization_level": str(state.loaded.representation or state.loaded.dtype).upper()}


def entry(state: ServingState) -> dict[str, Any]:
    size = _size(_path(state))
    # Not a content hash of the weights (hashing a GB file per listing is wasteful): stable per name and size.
    digest = hashlib.sha256(f"{state.model_name}:{size}".encode()).hexdigest()
    return {"name": f"{state.model_name}:latest", "model": f"{state.model_name}:latest", "modified_at": _STARTED,
            "size": size, "digest": digest, "details": details(state)}


def running(state: ServingState) -> dict[str, Any]:
    size_vram = 0
    if str(state.loaded.device).startswith("cuda"):
        import torch

        size_vram = int(torch.cuda.memory_allocated())
    return {**entry(state), "expires_at": _NEVER, "size_vram": size_vram, "context_length": state.max_model_len}


def show(state: ServingState) -> dict[str, Any]:
    arch = getattr(getattr(state.loaded.runner, "model", None), "arch", None)
    d = details(state)
    info: dict[str, Any] = {"general.architecture": d["family"], "general.parameter_count": _params(state),
                            f"{d['family']}.context_length": state.max_model_len}
    if arch is not None:
        info[f"{d['family']}.embedding_length"] = arch.hidden_size
        info[f"{d['family']}.block_count"] = arch.num_layers
    caps = ["completion"] + (["embedding"] if getattr(state.loaded, "backend", "torch") == "torch" else [])
    params = "\n".join(f"{k} {v}" for k, v in DEFAULTS.items())
    return {"license": "", "modelfile": f"FROM {_path(state) or state.model_name}\n", "parameters": params,
            "template": getattr(state.tokenizer, "chat_template", None) or "", "details": d, "model_info": info,
            "capabilities": caps, "modified_at": _STARTED}
