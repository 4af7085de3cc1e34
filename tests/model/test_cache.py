"""The converted-model cache: a temporary copy left by a process that ended mid-conversion (killed, or a server
stopped while loading, which ends without Python's teardown) is removed by the next conversion; another live
process's copy in progress is left alone."""
from __future__ import annotations

import os
import subprocess
import sys

from sliceserve.model.cache import cached_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_conversion_sweeps_the_copies_of_processes_that_are_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICESERVE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    built = []

    def build(tmp):
        built.append(tmp.name)
        (tmp / "weights").write_text("w")

    # Where the copies live: the first conversion makes the folder (and names its own copy by its pid).
    final = cached_dir(gguf, "hf", build)
    assert built[0].startswith(f".hf-{os.getpid()}-")
    parent = final.parent
    orphan = parent / f".hf-{_dead_pid()}-abc"          # a process that ended mid-conversion
    alive = parent / f".hf-{os.getppid()}-def"           # a live process, still converting
    other_part = parent / f".tokenizer-{_dead_pid()}-x"  # another part's copy: its own conversion sweeps it
    for d in (orphan, alive, other_part):
        d.mkdir()
        (d / "weights").write_text("half")

    (final / ".complete").unlink()                       # make the next call convert again
    cached_dir(gguf, "hf", build)
    assert len(built) == 2
    assert not orphan.exists()
    assert alive.exists() and other_part.exists()
    assert (final / ".complete").exists() and (final / "weights").read_text() == "w"
