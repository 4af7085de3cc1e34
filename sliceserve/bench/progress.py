"""Progress for bench and simulate: a tqdm bar on a terminal, plain lines anywhere else.

A bar redraws itself with carriage returns and cursor escape codes; written to a file or a CI log those
become clutter (`bench ... > log.txt` filled with '\\r' and '\\x1b[A'). So the bar is drawn only when the
stream is a TTY, and a log gets one line per milestone (each quarter of the work, or every unit when there
are few), e.g. `simulate: 6/12 runs (rate=4)`.
"""
from __future__ import annotations

import sys
from typing import Any, TextIO

# With at most this many units, every one gets its own line; beyond, only each quarter does.
_EVERY_UNIT_UP_TO = 20


class PlainProgress:
    """The part of tqdm's interface that bench and simulate use, printing whole lines."""

    def __init__(self, total: int, desc: str, unit: str, stream: TextIO) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n = 0
        self.postfix = ""
        self._next_quarter = 1

    def update(self, n: int = 1) -> None:
        self.n += n
        due = self.total <= _EVERY_UNIT_UP_TO or self.n >= self.total
        while self._next_quarter <= 4 and self.n * 4 >= self._next_quarter * self.total:
            self._next_quarter += 1
            due = True
        if due:
            self._line()

    def _line(self) -> None:
        tail = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{tail}", file=self.stream, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        pass

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class NoProgress(PlainProgress):
    """--no-progress: nothing at all."""

    def _line(self) -> None:
        pass


def progress(total: int, desc: str, unit: str = "it", enabled: bool = True,
             stream: TextIO | None = None) -> Any:
    """A tqdm bar on a TTY, PlainProgress elsewhere, NoProgress when disabled. Always on stderr by default,
    so stdout (tables, JSON) stays clean."""
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return NoProgress(total, desc, unit, stream)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream, leave=False)
    return PlainProgress(total, desc, unit, stream)
