"""One writer per batch output: a lock file beside it that holds on a shared filesystem.

The lock is made with an exclusive create (`O_CREAT | O_EXCL`, atomic on local filesystems and
on NFS v3 and later), so it works for drivers on any node writing to the same shared path, where
`flock`/`fcntl` locks are not reliable. It names its holder (host, pid, start time) and the
holder keeps touching it (a heartbeat); a lock whose holder is a dead process on this host, or
whose heartbeat stopped `stale_after_s` ago, was left by a crashed run and is taken over. (Same
host means the same boot and pid namespace, not only the same host name: containers may share
one.)

Taking over happens under a second exclusive file (`.lock.takeover`), so of several runs racing
to take over one does at a time: it reads the lock again, removes it only if it is still the
file judged stale, and then makes its own with the same exclusive create; the others find the
new holder alive and are refused. A holder whose lock was nonetheless taken from it (it stalled
for longer than `stale_after_s`) notices at its next heartbeat, and `lost` tells its writer to
stop rather than write beside the new holder. Heartbeats compare the file's time with this
host's clock, so the nodes' clocks must agree to well within `stale_after_s` (NTP does).
"""

from __future__ import annotations

import datetime
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import msgspec

from orchestray.errors import OutputInUseError

__all__ = ["OutputLock", "lock_path"]

HEARTBEAT_S = 2.0
STALE_AFTER_S = 30.0
# A takeover takes milliseconds; a takeover file this old was left by a run that died in one.
_TAKEOVER_STALE_S = 10.0
_ACQUIRE_FOR_S = 5.0


class _Holder(msgspec.Struct):
    host: str
    pid: int
    started: float  # seconds since the epoch
    token: str
    # This boot of this kernel and this pid namespace: where `pid` means the same process as it
    # does to us (containers sharing a host name do not share pids).
    pid_space: str = ""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Holder).decode


def lock_path(output: str | os.PathLike) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".lock")


def _describe(holder: _Holder | None) -> str:
    if holder is None:
        return "a run that is still starting"
    started = datetime.datetime.fromtimestamp(holder.started, datetime.timezone.utc)
    return f"host {holder.host}, pid {holder.pid}, started {started:%Y-%m-%d %H:%M:%S} UTC"


def _pid_space() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""  # not Linux: only the heartbeat tells


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


class OutputLock:
    """`acquire()` or raise `OutputInUseError` naming the holder; `release()` when done.

    Also a context manager. `lost` turns true if the lock was taken over while held.
    """

    def __init__(self, output: str | os.PathLike, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.output = Path(output)
        self.path = lock_path(output)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.lost = False
        self._raw: bytes | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        holder = _Holder(socket.gethostname(), os.getpid(), time.time(), uuid.uuid4().hex, _pid_space())
        raw = _encode(holder) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Each round makes the lock, is refused, or clears a stale one (or waits for a takeover).
        give_up = time.monotonic() + _ACQUIRE_FOR_S
        while time.monotonic() < give_up:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                seen = self._read(self.path)
                if seen is None:
                    continue  # gone in between: try again
                seen_raw, mtime = seen
                if not self._stale(seen_raw, mtime):
                    raise self._in_use(seen_raw) from None
                self._take_over(seen_raw)
                continue
            try:
                os.write(fd, raw)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._raw = raw
            self._beat = threading.Thread(target=self._heartbeat, name=f"lock {self.path.name}", daemon=True)
            self._beat.start()
            return
        raise OutputInUseError(f"{self.output}: could not take the lock {self.path} (other runs keep taking it)")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self._raw is not None and not self.lost and self._owned():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self._raw = None

    def check(self) -> None:
        """Raise if the lock was taken over: the caller must stop writing."""
        if self.lost:
            raise OutputInUseError(
                f"{self.output}: the lock {self.path} was taken over by {self._holder_text()} "
                "after this run stalled; stopping so that only one run writes"
            )

    # -- inside

    @staticmethod
    def _read(path: Path) -> tuple[bytes, float] | None:
        try:
            with open(path, "rb") as f:
                raw = f.read()
                mtime = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        return raw, mtime

    @staticmethod
    def _parse(raw: bytes) -> _Holder | None:
        try:
            return _decode(raw)
        except msgspec.DecodeError:
            return None  # empty (its maker has not written it yet) or damaged

    def _stale(self, raw: bytes, mtime: float) -> bool:
        holder = self._parse(raw)
        if holder is not None and holder.pid_space and holder.pid_space == _pid_space() and not _process_alive(holder.pid):
            return True  # a process of our own pid space: we can know for sure, at once
        # A live holder touches it every few seconds (so a reused pid does not keep it either).
        return time.time() - mtime > self.stale_after_s

    def _take_over(self, judged: bytes) -> None:
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            seen = self._read(guard)
            if seen is not None and time.time() - seen[1] > _TAKEOVER_STALE_S:
                guard.unlink(missing_ok=True)
            time.sleep(0.05)  # another run is taking over: see what it leaves
            return
        try:
            seen = self._read(self.path)
            if seen is not None and seen[0] == judged and self._stale(*seen):
                self.path.unlink()
        finally:
            guard.unlink(missing_ok=True)

    def _in_use(self, raw: bytes) -> OutputInUseError:
        return OutputInUseError(
            f"{self.output} is being written by another run ({_describe(self._parse(raw))}; lock {self.path}). "
            "Wait for it to finish or stop it; running the same command then resumes."
        )

    def _owned(self) -> bool:
        seen = self._read(self.path)
        return seen is not None and seen[0] == self._raw

    def _holder_text(self) -> str:
        seen = self._read(self.path)
        return _describe(self._parse(seen[0])) if seen is not None else "another run"

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            # A takeover under way renames and may link back within moments: look twice.
            if not self._owned() and (self._stop.wait(0.2) or not self._owned()):
                if not self._stop.is_set():
                    self.lost = True
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass
