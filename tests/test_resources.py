"""Every resource probe against a fake of the library it reads, plus the monitor's fallbacks and failures."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sliceserve.resources import (JtopProbe, Monitor, NVMLProbe, ProcMeminfoProbe, PsutilProbe,
                                        ResourceSample, TorchCUDAProbe)

GiB = 2**30


class FakePsutil:
    def __init__(self) -> None:
        self.cpu_calls = 0

    def cpu_percent(self, interval=None):
        self.cpu_calls += 1
        return 37.5

    def virtual_memory(self):
        return SimpleNamespace(total=8 * GiB, available=3 * GiB)

    def Process(self):  # noqa: N802 - psutil's name
        return SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=900 * 2**20))


def test_psutil_probe():
    fake = FakePsutil()
    s = ResourceSample()
    PsutilProbe(fake).read(s)
    assert (s.cpu_percent, s.mem_total_bytes, s.mem_available_bytes, s.process_rss_bytes) == (
        37.5, 8 * GiB, 3 * GiB, 900 * 2**20)
    assert fake.cpu_calls == 2   # primed once at start, so the first real reading is not 0.0


def test_proc_meminfo_probe(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal:       16000 kB\nMemFree:  1000 kB\nMemAvailable:   12000 kB\n")
    (tmp_path / "status").write_text("Name:\tpython\nVmRSS:\t  2048 kB\n")
    s = ResourceSample()
    ProcMeminfoProbe(str(tmp_path / "meminfo"), str(tmp_path / "status")).read(s)
    assert (s.mem_total_bytes, s.mem_available_bytes, s.process_rss_bytes) == (16000 * 1024, 12000 * 1024,
                                                                                2048 * 1024)
    # An old kernel without MemAvailable: free + page cache.
    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemFree: 10 kB\nCached: 30 kB\n")
    ProcMeminfoProbe(str(tmp_path / "meminfo"), str(tmp_path / "status")).read(s)
    assert s.mem_available_bytes == 40 * 1024
    with pytest.raises(OSError):
        ProcMeminfoProbe(str(tmp_path / "absent"))


class FakeNVML:
    def __init__(self, power_mw=(42_000, None)) -> None:
        self.power = power_mw

    def nvmlInit(self):  # noqa: N802 - NVML's names
        self.inited = True

    def nvmlDeviceGetCount(self):  # noqa: N802
        return len(self.power)

    def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
        return i

    def nvmlDeviceGetName(self, h):  # noqa: N802
        return b"Fake GPU"

    def nvmlDeviceGetMemoryInfo(self, h):  # noqa: N802
        return SimpleNamespace(used=(h + 1) * GiB, total=16 * GiB)

    def nvmlDeviceGetUtilizationRates(self, h):  # noqa: N802
        return SimpleNamespace(gpu=50 + h)

    def nvmlDeviceGetPowerUsage(self, h):  # noqa: N802
        if self.power[h] is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.power[h]


def test_nvml_probe_reads_every_gpu_and_tolerates_missing_power():
    s = ResourceSample()
    NVMLProbe(FakeNVML()).read(s)
    assert [(g.name, g.mem_used_bytes, g.util_percent, g.power_w) for g in s.gpus] == [
        ("Fake GPU", GiB, 50.0, 42.0), ("Fake GPU", 2 * GiB, 51.0, None)]
    assert s.power_w == 42.0 and s.gpu_mem_used_bytes == 3 * GiB
    with pytest.raises(RuntimeError, match="no GPU"):
        NVMLProbe(FakeNVML(power_mw=()))


def test_torch_cuda_probe():
    cuda = SimpleNamespace(is_available=lambda: True, device_count=lambda: 1,
                           mem_get_info=lambda i: (6 * GiB, 8 * GiB), get_device_name=lambda i: "Orin")
    s = ResourceSample()
    TorchCUDAProbe(SimpleNamespace(cuda=cuda)).read(s)
    assert [(g.name, g.mem_used_bytes, g.mem_total_bytes) for g in s.gpus] == [("Orin", 2 * GiB, 8 * GiB)]
    with pytest.raises(RuntimeError, match="CUDA"):
        TorchCUDAProbe(SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: False)))


def test_jtop_probe_board_power_and_shared_memory():
    class FakeJtop:
        stats = {"Power TOT": 7300, "GPU": 64.0}
        memory = {"RAM": {"tot": 8_000_000, "used": 5_000_000}}

        def start(self):
            self.started = True

    s = ResourceSample(gpus=[])
    JtopProbe(SimpleNamespace(jtop=FakeJtop)).read(s)
    assert s.board_power_w == pytest.approx(7.3) and s.power_w == pytest.approx(7.3)
    assert s.mem_total_bytes == 8_000_000 * 1024 and s.mem_available_bytes == 3_000_000 * 1024
    assert s.gpus[0].util_percent == 64.0


def test_monitor_skips_fallbacks_and_switches_off_broken_probes(tmp_path):
    def absent():
        raise ModuleNotFoundError("No module named 'pynvml'")

    class Flaky(PsutilProbe):
        calls = 0

        def read(self, sample):
            Flaky.calls += 1
            if Flaky.calls > 1:
                raise OSError("boom")
            super().read(sample)

    absent.name = "nvml"
    mon = Monitor(factories=(lambda: Flaky(FakePsutil()), absent))
    assert [p.name for p in mon.probes] == ["psutil"]
    assert mon.problems == {"nvml": "ModuleNotFoundError: No module named 'pynvml'"}
    first = mon.sample()
    assert first.sources == ["psutil"] and first.cpu_percent == 37.5
    second = mon.sample()           # the probe fails: switched off, reported, no exception
    assert second.sources == [] and mon.probes == [] and "boom" in mon.problems["psutil"]


def test_monitor_uses_proc_only_without_psutil(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable: 60 kB\n")

    def no_psutil():
        raise ModuleNotFoundError("psutil")
    no_psutil.name = "psutil"

    def proc():
        return ProcMeminfoProbe(str(tmp_path / "meminfo"), str(tmp_path / "none"))
    proc.name = "proc"
    mon = Monitor(factories=(no_psutil, proc))
    s = mon.sample()
    assert s.sources == ["proc"] and s.mem_available_bytes == 60 * 1024 and s.process_rss_bytes is None
    mon_both = Monitor(factories=(lambda: PsutilProbe(FakePsutil()), proc))
    assert [p.name for p in mon_both.probes] == ["psutil"]     # /proc is only the fallback


def test_default_monitor_on_this_machine_reads_memory():
    s = Monitor().sample()
    assert s.mem_total_bytes and s.mem_total_bytes > 0 and s.process_rss_bytes > 0
