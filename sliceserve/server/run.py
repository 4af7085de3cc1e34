"""Start the server: load the model, build the app, run uvicorn."""
from __future__ import annotations

import logging

from sliceserve.server.settings import ServerSettings


def serve(settings: ServerSettings) -> None:
    import uvicorn

    from sliceserve.server.app import create_app
    from sliceserve.server.state import build_state

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("sliceserve.server")
    log.info("loading model %s on %s", settings.model or "(embedded SmolLM2-135M-Instruct)", settings.device)
    state = build_state(settings)
    log.info("model %s ready: %d KV blocks of %d tokens, max_model_len %d", state.model_name,
             state.engine.core.scheduler.kv.num_blocks, state.engine.core.scheduler.kv.block_size,
             state.max_model_len)
    uvicorn.run(create_app(state), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=5)
