"""Where converted models live: GGUF -> (tokenizer dir, safetensors HF dir), converted once per file.

Dequantising the embedded GGUF takes 16-20 s and building its tokenizer ~6 s (DESIGN.md, measured here);
a converted copy reloads in under 3 s. The cache is outside the repository: $SLICESERVE_CACHE, else
~/.cache/sliceserve. Each conversion writes into a private temporary directory that is renamed into place,
so concurrent processes (parallel test runs) never see a half-written copy; a copy left by a process that
ended mid-conversion is removed by the next conversion of that part.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_root() -> Path:
    root = os.environ.get("SLICESERVE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sliceserve")
    return Path(root)


def _key(path: Path) -> str:
    # Path, size and mtime identify the file well enough without hashing hundreds of MiB.
    st = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"{path.stem}-{digest}"


def cached_dir(gguf_path: str | os.PathLike, part: str, build: Callable[[Path], None]) -> Path:
    """`<cache>/<gguf key>/<part>`, produced by `build(tmp_dir)` on first use."""
    path = Path(gguf_path)
    final = cache_root() / _key(path) / part
    if (final / ".complete").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_orphans(final.parent, part)
    tmp = Path(tempfile.mkdtemp(prefix=f".{part}-{os.getpid()}-", dir=final.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first (or a stale incomplete copy is there): keep a complete one.
            if not (final / ".complete").exists():
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _sweep_orphans(parent: Path, part: str) -> None:
    """Remove the temporary copies of `part` whose process is gone: one ended mid-conversion (killed, or
    stopped while the server was loading, which ends the process without Python's teardown: server/run.py)
    and left a copy as large as the model. Each copy is named `.<part>-<pid>-<random>`."""
    for tmp in parent.glob(f".{part}-*"):
        pid = tmp.name[len(part) + 2:].split("-", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True


def gguf_tokenizer_dir(gguf_path: str | os.PathLike) -> Path:
    """A directory holding the GGUF's tokenizer (tokenizer.json, config, chat template) as HF files."""
    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        path = Path(gguf_path)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        tok.save_pretrained(str(tmp))

    return cached_dir(gguf_path, "tokenizer", build)
