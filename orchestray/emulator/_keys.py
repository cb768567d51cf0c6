"""Per-key quotas and an arrival log: one emulator standing in for several API keys, and a record
of when it counted each call (to compare with when a client's limiter let it go).

A provider limits each key on its own. `--key-rpm KEY=RPM` gives KEY its own requests-per-minute
quota (same shape and tpm as the rest); calls with any other key share the default `--rpm`.
The keys named here are test keys; they appear in the process listing, unlike `--api-key`.

The arrival log (`--log-arrivals`, read at GET /arrivals) keeps, for every call since the last
reset, the monotonic time its handler began, the time the quota counted it, which key it came
with, and whether it was admitted. time.monotonic is one clock for every process on a Linux
host, so a client's own stamps compare with these directly.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._quota import Quotas

__all__ = ["KeyedQuotas", "ArrivalLog", "key_of"]

_MAX_ARRIVALS = 1_000_000  # a bound on memory for a long run with the log on


def key_of(headers: Mapping[str, str]) -> str:
    """The API key a call came with: `x-api-key`, else the bearer token, else ''."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("Authorization", "")
    return auth[7:] if auth.startswith("Bearer ") else ""


class KeyedQuotas:
    """The default `Quotas` and one per key with a limit of its own."""

    __slots__ = ("default", "_by_key")

    def __init__(self, rpm: int | None, tpm: int | None, mode: str, key_rpm: tuple[tuple[str, int], ...] = ()):
        self.default = Quotas(rpm, tpm, mode)
        self._by_key = {key: Quotas(limit, tpm, mode) for key, limit in key_rpm}

    def for_key(self, key: str) -> Quotas:
        return self._by_key.get(key, self.default)


class ArrivalLog:
    """(entered, counted, key index, admitted) for every call since the last reset."""

    __slots__ = ("keys", "_index", "rows")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self.rows: list[tuple[float, float, int, int]] = []

    def add(self, entered: float, counted: float, key: str, admitted: bool) -> None:
        if len(self.rows) >= _MAX_ARRIVALS:
            return
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.keys)
            self.keys.append(key)
        self.rows.append((entered, counted, index, int(admitted)))

    def as_dict(self, started: float) -> dict:
        return {"started": started, "keys": self.keys, "columns": ["entered", "counted", "key", "admitted"], "rows": self.rows}
