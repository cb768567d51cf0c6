"""Resuming a batch: which input lines an earlier run answered, under the output's one lock.

A run takes the output's lock (`output_lock.OutputLock`) before it reads the output, since
resuming and rewriting it are the writer's alone; a second run on it while the first lives is
refused. A torn last line (a crash mid-write) is cut off; with `retry_errors`, error records are
dropped so those lines run again. Either way the file is rewritten next to itself and swapped in
atomically, so a crash here loses nothing either.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import msgspec

from orchestray.batch_format import decode_record_view, line_of
from orchestray.output_lock import OutputLock

__all__ = ["LineSet", "answered_lines", "resumed_output"]


class LineSet:
    """Line numbers as a bitmap: a million lines cost 125 KB, not a set of a million ints."""

    __slots__ = ("_bits", "count")

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, line: int) -> None:
        byte, bit = divmod(line, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1 + len(self._bits) // 2))
        if not self._bits[byte] >> bit & 1:
            self._bits[byte] |= 1 << bit
            self.count += 1

    def __contains__(self, line: int) -> bool:
        byte, bit = divmod(line, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


def _kept_line(raw: bytes, retry_errors: bool) -> int | None:
    """The input line an output line answers, when it is whole, ours, and kept."""
    if not raw.endswith(b"\n") or not raw.strip():
        return None
    try:
        record = decode_record_view(raw)
    except msgspec.DecodeError:
        return None  # not ours or damaged: its line will be answered again
    line = line_of(record.id)
    if line is None or (retry_errors and record.error is not None):
        return None
    return line


def answered_lines(path: Path, retry_errors: bool) -> LineSet:
    """Read what an earlier run wrote, a line at a time; the line numbers already done. Lines
    that will run again (torn, foreign, or errors being retried) are cut out of the file."""
    done = LineSet()
    if not path.exists():
        return done
    rewrite = False
    with path.open("rb") as f:
        for raw in f:
            line = _kept_line(raw, retry_errors)
            if line is not None:
                done.add(line)
            elif raw.strip() or not raw.endswith(b"\n"):
                rewrite = True
                if not raw.endswith(b"\n"):
                    break  # torn: it will be answered again
    if not rewrite:
        return done
    tmp = path.with_name(path.name + ".tmp")
    with path.open("rb") as source, tmp.open("wb") as kept:
        for raw in source:
            if _kept_line(raw, retry_errors) is not None:
                kept.write(raw)
        kept.flush()
        os.fsync(kept.fileno())
    os.replace(tmp, path)
    return done


@contextlib.contextmanager
def resumed_output(path: Path, retry_errors: bool, lock: OutputLock | None = None) -> Iterator[tuple[OutputLock, LineSet]]:
    """The output's lock (`lock`, when the caller holds it already) and its answered lines."""
    with contextlib.nullcontext(lock) if lock is not None else OutputLock(path) as held:
        yield held, answered_lines(path, retry_errors)
