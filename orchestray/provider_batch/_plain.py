"""Plain lines: a line whose model is a batch-API provider itself needs no coordinator, so it is
not held as a task parked until its round ends.

Its request goes to a spool file beside the output, one per provider and round, and the driver
keeps only the line's place in the input. The answer, streamed back from the provider, becomes
the line's record then: the line is read and parsed again, and its record made by the same
`_answer` as every other line's. So a line costs the driver a dict entry while it waits, not a
task, a parsed request and, later, its whole answer at once.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

from orchestray.batch import _answer
from orchestray.batch_format import Line, OutputRecord, parse_line
from orchestray.batch_report import BatchResult
from orchestray.messages import ChatRequest, Completion
from orchestray.provider_batch._rounds import DeferredProvider, Rounds, request_key

__all__ = ["PlainLines"]


def _spool_dir(output: Path, run_id: str) -> Path:
    return output.with_name(f".{output.name}.spool-{run_id}")


class _Entry:
    """A plain line's call waiting for its batch, as an `_Ask` is a parked call's: its key and
    attempts, and where the line is in the input."""

    __slots__ = ("key", "offset", "number", "attempts")

    def __init__(self, key: str, offset: int, number: int):
        self.key, self.offset, self.number, self.attempts = key, offset, number, 0


class _Spool:
    """One provider's requests for the next round: `KEY\\tLINE` per request."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self._file = path.open("ab")

    def add(self, key: str, data: bytes) -> None:
        self._file.write(key.encode() + b"\t" + data)
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def read(self) -> Iterator[tuple[str, bytes]]:
        self.close()
        try:
            with self.path.open("rb") as f:
                for raw in f:
                    key, _, data = raw.partition(b"\t")
                    yield key.decode(), data
        finally:
            self.path.unlink(missing_ok=True)


class _Given:
    """A model whose answer is already known: the line's record is made from it by `_answer`."""

    def __init__(self, settle: Callable[[ChatRequest], Completion]):
        self.settle = settle

    async def complete(self, request: ChatRequest) -> Completion:
        return self.settle(request)


class PlainLines:
    def __init__(self, source: Path, output: Path, rounds: Rounds, route: str | None, known: Callable[[str], bool],
                 write: Callable[[OutputRecord], None], result: BatchResult):
        self.rounds = rounds
        self.route, self.known = route, known
        self.write, self.result = write, result
        self.directory = _spool_dir(output, rounds.run_id)
        for stale in output.parent.glob(_spool_dir(output, "*").name):
            shutil.rmtree(stale, ignore_errors=True)  # a killed run's: its requests are in the journal
        self.directory.mkdir()
        self._input = source.open("rb")
        self.entries: dict[str, _Entry] = {}
        self._spools: dict[str, _Spool] = {}
        self._turn = 0

    def close(self) -> None:
        for spool in self._spools.values():
            spool.close()
        self._input.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- in ---------------------------------------------------------------------------------

    def offer(self, line: Line, offset: int) -> bool:
        """Spool `line` if it is plain and not answered yet; False if it runs as a task."""
        name = line.request.model
        if not isinstance(self.rounds.resolve(name), DeferredProvider):
            return False
        key = request_key(name, line.number, line.request)
        if key in self.rounds.answers:
            return False  # collected by an earlier run: its task finds the answer at once
        try:
            data = self.rounds.apis[name].line(key, line.request)
        except Exception:
            return False  # a field the provider cannot take: its task gets the error, as live
        self._spool(name).add(key, data)
        self.entries[key] = _Entry(key, offset, line.number)
        return True

    def _spool(self, provider: str) -> _Spool:
        spool = self._spools.get(provider)
        if spool is None:
            self._turn += 1
            spool = self._spools[provider] = _Spool(self.directory / f"{self._turn}.jsonl")
        return spool

    def waiting(self) -> list[str]:
        """The providers with spooled requests for the next round."""
        return [name for name, spool in self._spools.items() if spool.count]

    def take(self, provider: str) -> Iterator[tuple[_Entry, bytes]]:
        """The provider's spooled (entry, request line)s, read once; what comes back to be asked
        again (`again`) goes to a new spool, for the round after."""
        spool = self._spools.pop(provider, None)
        return ((self.entries[key], data) for key, data in spool.read()) if spool is not None else iter(())

    # --- out --------------------------------------------------------------------------------

    def _line(self, entry: _Entry) -> Line:
        self._input.seek(entry.offset)
        line = parse_line(self._input.readline(), entry.number, set(), self.route, self.known)
        assert isinstance(line, Line), "a line spooled once parses again"
        return line

    def again(self, entry: _Entry) -> None:
        """An expired or errored request, within its retry budget: spool it for the next round."""
        line = self._line(entry)
        provider = line.request.model
        self._spool(provider).add(entry.key, self.rounds.apis[provider].line(entry.key, line.request))

    async def answered(self, entry: _Entry, settle: Callable[[ChatRequest], Completion], latency_s: float) -> None:
        """The request's final outcome: the line's record, written now."""
        line = self._line(entry)
        del self.entries[entry.key]
        self.write(await _answer(line, lambda _: _Given(settle), self.result, time.monotonic() - latency_s))
