"""Scale-out on Ray Serve: N engine replicas behind an SLO-aware request router (docs/SCALE_OUT.md).

Ray is an optional extra (`pip install sliceserve[ray]`). The pure parts (routing.py, hints.py, asgi.py,
snapshot.py, config.py) import without it; `deployment.py`, `router.py` and `launch.py` need it, and
`require_ray()` says how to get it.
"""
from __future__ import annotations

import importlib.util

INSTALL_HINT = "Ray Serve is not installed: pip install 'sliceserve[ray]' (or pip install 'ray[serve]>=2.45')"


def ray_available() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.serve") is not None
    except (ImportError, ValueError):   # a half-installed or blocked package
        return False


def require_ray() -> None:
    """ValueError with the install command when Ray Serve is missing (the CLI turns it into one line, exit 2)."""
    if not ray_available():
        raise ValueError(INSTALL_HINT)
    try:
        from ray.serve import request_router  # noqa: F401 - the custom router API arrived in Ray 2.45
    except ImportError:
        raise ValueError("the installed Ray is too old (no serve.request_router); " + INSTALL_HINT) from None
