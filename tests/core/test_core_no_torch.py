"""The scheduling core, the simulator and EngineCore must not pull in torch (they run on any machine)."""
import subprocess
import sys


def test_core_sim_and_engine_core_import_no_torch():
    code = (
        "import sys\n"
        "import sliceserve.core, sliceserve.sim, sliceserve.engine.core\n"
        "from sliceserve.core.policies import available_policies\n"
        "names = available_policies()\n"
        "assert 'vllm' in names, names\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print('TORCH' if loaded else 'CLEAN')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "CLEAN"
