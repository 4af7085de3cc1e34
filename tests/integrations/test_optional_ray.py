"""Ray stays optional: the single-box server imports without it, and `serve --ray` says how to install it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from sliceserve.cli import main


def test_single_box_server_and_pure_routing_import_without_ray():
    # sys.modules["ray"] = None makes every `import ray...` fail, as on a machine without the extra.
    code = ("import sys; sys.modules['ray'] = None; sys.modules['ray.serve'] = None\n"
            "import sliceserve.server.app, sliceserve.cli.serve_cmd\n"
            "import sliceserve.integrations.ray.routing, sliceserve.integrations.ray.hints\n"
            "import sliceserve.integrations.ray.snapshot, sliceserve.integrations.ray.asgi\n"
            "from sliceserve.cli import main\n"
            "sys.exit(main(['serve', '--ray', '--model', '/nonexistent']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'sliceserve[ray]'" in proc.stderr


def test_replicas_without_ray_flag_is_a_user_error(capsys):
    assert main(["serve", "--replicas", "2"]) == 2
    assert "--replicas and --ray-address need --ray" in capsys.readouterr().err


def test_ray_settings_typos_are_one_line_errors():
    from sliceserve.integrations.ray.config import split_settings

    with pytest.raises(ValueError, match="ray.replica"):
        split_settings({"ray": {"replica": 2}})
    with pytest.raises(ValueError, match="policy"):
        split_settings({"ray": {"replicas": 2}, "policy": 3})
    ray_settings, engine = split_settings({"ray": {"replicas": 3, "routing": "default"}, "policy": "vllm"})
    assert (ray_settings.replicas, ray_settings.routing, engine.policy) == (3, "default", "vllm")
