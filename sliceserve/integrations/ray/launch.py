"""Start the scale-out application on a Ray cluster (`sliceserve serve --ray`), and stop it.

Without an address (or RAY_ADDRESS) this starts a local single-node cluster; with `--address auto` or
`ray://...`/`host:port` it joins an existing one (`ray start --head` on one box, `ray start
--address=HEAD:6379` on the others), and Serve spreads the replicas over the nodes.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from sliceserve.integrations.ray import require_ray
from sliceserve.integrations.ray.config import RaySettings
from sliceserve.server.settings import ServerSettings

log = logging.getLogger(__name__)
APP_NAME = "sliceserve"


def start(engine_settings: ServerSettings, ray_settings: RaySettings, address: str | None = None,
          num_cpus: float | None = None) -> str:
    """Connect to (or start) Ray, deploy the app, wait until every replica is up; returns the base URL."""
    require_ray()
    import ray
    from ray import serve

    from sliceserve.integrations.ray.deployment import build_app

    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            # A local cluster sized to the box, without the dashboard (an edge box has no CPU to spare for it).
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": ray_settings.http_host, "port": ray_settings.http_port})
    serve.run(build_app(engine_settings, ray_settings), name=APP_NAME, route_prefix="/")
    return f"http://{ray_settings.http_host}:{ray_settings.http_port}"


def stop() -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def serve_forever(engine_settings: ServerSettings, ray_settings: RaySettings, address: str | None = None) -> None:
    logging.basicConfig(level=engine_settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:   # Ctrl-C while the replicas are still deploying must shut Ray down too
        url = start(engine_settings, ray_settings, address)
        log.info("sliceserve on Ray Serve: %d replicas (%s routing) at %s", ray_settings.replicas,
                 ray_settings.routing, url)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def run_from_cli(cli: dict[str, Any], config_file: str | None, replicas: int | None, address: str | None) -> int:
    """`sliceserve serve --ray`: engine settings as the single-box server reads them (CLI > SLICESERVE_* env >
    file), plus the file's optional `ray:` mapping (RaySettings) and `--replicas`."""
    from sliceserve.integrations.ray.config import split_settings
    from sliceserve.server.settings import read_config_file, read_env

    require_ray()
    merged: dict[str, Any] = read_config_file(config_file) if config_file else {}
    merged.update(read_env(os.environ))
    merged.update({k: v for k, v in cli.items() if v is not None})
    ray_part = dict(merged.get("ray") or {})
    if replicas is not None:
        ray_part["replicas"] = replicas
    # Under Ray the HTTP front is Serve's proxy: the server's host/port settings place it.
    for key in ("host", "port"):
        if key in merged:
            ray_part.setdefault("http_" + key, merged[key])
    merged["ray"] = ray_part
    ray_settings, engine_settings = split_settings(merged)
    serve_forever(engine_settings, ray_settings, address)
    return 0
