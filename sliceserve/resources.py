"""Resource monitor: CPU, memory, GPU memory/utilisation/power, from whichever probes this device has.

Every probe is optional. Each takes the module it reads as a constructor argument (None: import it on first
use), so tests drive it with fakes and a device without psutil / NVML / CUDA / jtop simply has fewer
fields. A probe that fails once (library absent, no driver, permission) is switched off and says why in
`Monitor.problems`; it never takes the server down.

Probes, and what each fills in a `ResourceSample`:
- psutil: cpu_percent, mem_total/available_bytes, process_rss_bytes.
- /proc/meminfo (+ /proc/self/status): the same memory fields when psutil is missing.
- NVML (nvidia-ml-py, imported as `pynvml`): per-GPU memory, utilisation and power (NVML reports mW).
- torch.cuda.mem_get_info: per-GPU free/total memory when NVML is missing (torch is imported only if
  it is already loaded, so the monitor never pulls torch into a process that does not use it).
- jtop (jetson-stats) on Jetson boards: board power ('Power TOT', mW), GPU load, shared RAM (kB), read
  with the key names of jetson-stats 4.x. Only tested against fakes: no Jetson here.
"""
from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass
class GPUSample:
    index: int
    name: str = ""
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    util_percent: float | None = None
    power_w: float | None = None


@dataclass
class ResourceSample:
    cpu_percent: float | None = None
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    process_rss_bytes: int | None = None
    gpus: list[GPUSample] = field(default_factory=list)
    board_power_w: float | None = None     # whole board (jtop); None where it cannot be read
    sources: list[str] = field(default_factory=list)

    @property
    def power_w(self) -> float | None:
        """Best power reading: the board's when known, else the sum over GPUs that report one."""
        if self.board_power_w is not None:
            return self.board_power_w
        gpu = [g.power_w for g in self.gpus if g.power_w is not None]
        return sum(gpu) if gpu else None

    @property
    def gpu_mem_used_bytes(self) -> int | None:
        used = [g.mem_used_bytes for g in self.gpus if g.mem_used_bytes is not None]
        return sum(used) if used else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["power_w"] = self.power_w
        return out


def _import(name: str) -> Any:
    return importlib.import_module(name)


class Probe:
    name = "probe"

    def read(self, sample: ResourceSample) -> None:
        raise NotImplementedError


class PsutilProbe(Probe):
    name = "psutil"

    def __init__(self, module: Any = None) -> None:
        self.psutil = module if module is not None else _import("psutil")
        self._proc = self.psutil.Process()
        self.psutil.cpu_percent(interval=None)   # the first call only primes the counter

    def read(self, sample: ResourceSample) -> None:
        vm = self.psutil.virtual_memory()
        sample.cpu_percent = float(self.psutil.cpu_percent(interval=None))
        sample.mem_total_bytes, sample.mem_available_bytes = int(vm.total), int(vm.available)
        sample.process_rss_bytes = int(self._proc.memory_info().rss)


class ProcMeminfoProbe(Probe):
    """Fallback for Linux without psutil. No CPU figure (it would need two reads of /proc/stat)."""

    name = "proc"

    def __init__(self, meminfo: str = "/proc/meminfo", status: str = "/proc/self/status",
                 opener: Callable[[str], Any] = open) -> None:
        self.meminfo, self.status, self.opener = meminfo, status, opener
        self._fields(self.meminfo)  # fail now (-> probe off) if the file is missing

    def _fields(self, path: str) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.opener(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
        return out

    def read(self, sample: ResourceSample) -> None:
        info = self._fields(self.meminfo)
        if "MemTotal" not in info:
            raise ValueError(f"{self.meminfo} has no MemTotal line")
        sample.mem_total_bytes = info["MemTotal"]
        # Kernels before 3.14 lack MemAvailable: free + page cache is the usual approximation.
        sample.mem_available_bytes = info.get("MemAvailable", info.get("MemFree", 0) + info.get("Cached", 0))
        try:
            sample.process_rss_bytes = self._fields(self.status).get("VmRSS")
        except OSError:
            pass


class NVMLProbe(Probe):
    name = "nvml"

    def __init__(self, module: Any = None) -> None:
        self.nvml = module if module is not None else _import("pynvml")
        self.nvml.nvmlInit()
        self.handles = [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self.nvml.nvmlDeviceGetCount())]
        if not self.handles:
            raise RuntimeError("NVML sees no GPU")

    def read(self, sample: ResourceSample) -> None:
        nv = self.nvml
        for i, h in enumerate(self.handles):
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            gpu = GPUSample(i, _text(nv.nvmlDeviceGetName(h)), int(mem.used), int(mem.total))
            gpu.util_percent = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            try:
                gpu.power_w = nv.nvmlDeviceGetPowerUsage(h) / 1000.0   # NVML reports milliwatts
            except Exception:  # noqa: BLE001 - many consumer/embedded GPUs do not expose power
                gpu.power_w = None
            sample.gpus.append(gpu)


class TorchCUDAProbe(Probe):
    name = "torch.cuda"

    def __init__(self, module: Any = None) -> None:
        if module is None:
            module = sys.modules.get("torch")
            if module is None:
                raise RuntimeError("torch is not loaded in this process")
        self.torch = module
        if not self.torch.cuda.is_available():
            raise RuntimeError("CUDA is not available")

    def read(self, sample: ResourceSample) -> None:
        cuda = self.torch.cuda
        for i in range(cuda.device_count()):
            free, total = cuda.mem_get_info(i)
            sample.gpus.append(GPUSample(i, str(cuda.get_device_name(i)), int(total - free), int(total)))


class JtopProbe(Probe):
    name = "jtop"

    def __init__(self, module: Any = None) -> None:
        mod = module if module is not None else _import("jtop")
        self.jetson = mod.jtop()
        self.jetson.start()

    def read(self, sample: ResourceSample) -> None:
        stats = dict(self.jetson.stats)
        if stats.get("Power TOT") is not None:
            sample.board_power_w = float(stats["Power TOT"]) / 1000.0   # jtop reports milliwatts
        ram = (getattr(self.jetson, "memory", None) or {}).get("RAM")
        if ram:
            # Jetson memory is shared by CPU and GPU; jtop reports kB.
            sample.mem_total_bytes = int(ram["tot"]) * 1024
            sample.mem_available_bytes = int(ram["tot"] - ram["used"]) * 1024
        if stats.get("GPU") is not None:
            sample.gpus.append(GPUSample(0, "jetson", util_percent=float(stats["GPU"])))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


DEFAULT_PROBES: tuple[type[Probe], ...] = (PsutilProbe, ProcMeminfoProbe, NVMLProbe, TorchCUDAProbe, JtopProbe)
# Probes that answer the same question as an earlier one are skipped when that one works.
_FALLBACK_FOR = {"proc": "psutil", "torch.cuda": "nvml"}


class Monitor:
    """Reads every working probe into one `ResourceSample`."""

    def __init__(self, probes: list[Probe] | None = None,
                 factories: tuple[Callable[[], Probe], ...] = DEFAULT_PROBES) -> None:
        self.problems: dict[str, str] = {}
        if probes is None:
            probes = []
            for make in factories:
                name = getattr(make, "name", repr(make))
                if _FALLBACK_FOR.get(name) in {p.name for p in probes}:
                    continue
                try:
                    probes.append(make())
                except Exception as exc:  # noqa: BLE001 - absent library, no driver, no file: probe off
                    self.problems[name] = f"{type(exc).__name__}: {exc}"
        self.probes = probes
        self.last: ResourceSample | None = None

    def sample(self) -> ResourceSample:
        out = ResourceSample()
        for probe in list(self.probes):
            try:
                probe.read(out)
                out.sources.append(probe.name)
            except Exception as exc:  # noqa: BLE001 - a probe failing mid-run is switched off, once
                log.warning("resource probe %s failed and is switched off: %s", probe.name, exc)
                self.problems[probe.name] = f"{type(exc).__name__}: {exc}"
                self.probes.remove(probe)
        self.last = out
        return out
