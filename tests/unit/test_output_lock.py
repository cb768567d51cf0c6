"""One writer per batch output: the lock file beside it, and run_batch holding it. No Ray."""

import asyncio
import json
import multiprocessing
import os
import socket
import time

import pytest

from orchestray.batch import BatchOptions, run_batch
from orchestray.errors import OutputInUseError
from orchestray.messages import Completion
from orchestray.output_lock import OutputLock, _pid_space, lock_path


def holder_file(path, host, pid, age_s=0.0, pid_space=None):
    lock = lock_path(path)
    pid_space = _pid_space() if pid_space is None and host == socket.gethostname() else pid_space or ""
    lock.write_text(json.dumps({"host": host, "pid": pid, "started": time.time() - age_s, "token": "theirs",
                                "pid_space": pid_space}) + "\n")
    if age_s:
        os.utime(lock, (time.time() - age_s, time.time() - age_s))
    return lock


def dead_pid() -> int:
    child = multiprocessing.get_context("fork").Process(target=lambda: None)
    child.start()
    child.join()
    return child.pid


def test_a_second_writer_is_refused_at_once_with_the_holder_named(tmp_path):
    out = tmp_path / "out.jsonl"
    with OutputLock(out):
        started = time.monotonic()
        with pytest.raises(OutputInUseError) as caught:
            OutputLock(out).acquire()
        assert time.monotonic() - started < 1.0
    message = str(caught.value)
    assert f"host {socket.gethostname()}" in message and f"pid {os.getpid()}" in message and "UTC" in message
    assert not lock_path(out).exists()  # released
    with OutputLock(out):  # and free again
        pass


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    out = tmp_path / "out.jsonl"
    holder_file(out, socket.gethostname(), dead_pid())
    with OutputLock(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_dead_pid_of_another_pid_namespace_proves_nothing(tmp_path):
    """A container sharing this host name but not its pids: only the heartbeat tells."""
    out = tmp_path / "out.jsonl"
    holder_file(out, socket.gethostname(), dead_pid(), pid_space="another-boot pid:[1]")
    with pytest.raises(OutputInUseError):
        OutputLock(out).acquire()


def test_a_lock_of_another_host_is_taken_over_only_once_its_heartbeat_is_stale(tmp_path):
    out = tmp_path / "out.jsonl"
    holder_file(out, "node-b", 4242, age_s=5)
    with pytest.raises(OutputInUseError, match="host node-b, pid 4242"):
        OutputLock(out, stale_after_s=30).acquire()
    holder_file(out, "node-b", 4242, age_s=60)
    with OutputLock(out, stale_after_s=30) as lock:
        assert json.loads(lock.path.read_text())["host"] == socket.gethostname()


def test_the_heartbeat_keeps_a_live_lock_fresh(tmp_path):
    out = tmp_path / "out.jsonl"
    with OutputLock(out, heartbeat_s=0.05) as lock:
        os.utime(lock.path, (time.time() - 100, time.time() - 100))
        time.sleep(0.3)
        assert time.time() - lock.path.stat().st_mtime < 5
        assert not lock.lost


def test_a_holder_whose_lock_was_taken_over_learns_it_and_stops_writing(tmp_path):
    out = tmp_path / "out.jsonl"
    lock = OutputLock(out, heartbeat_s=0.05)
    lock.acquire()
    # As if this run had stalled for longer than stale_after_s and another took over.
    holder_file(out, "node-c", 77)
    deadline = time.monotonic() + 5
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(OutputInUseError, match="taken over by host node-c, pid 77"):
        lock.check()
    lock.release()
    assert lock_path(out).exists()  # the new holder's lock is left alone


def _contend(out: str, barrier, results) -> None:
    barrier.wait()
    try:
        lock = OutputLock(out)
        lock.acquire()
        results.put(("won", os.getpid()))
        time.sleep(0.2)  # hold it while the others try
        lock.release()
    except OutputInUseError:
        results.put(("refused", os.getpid()))


def test_of_runs_racing_to_take_over_a_stale_lock_exactly_one_wins(tmp_path):
    out = tmp_path / "out.jsonl"
    ctx = multiprocessing.get_context("fork")
    for _ in range(4):
        holder_file(out, socket.gethostname(), dead_pid())
        barrier, results = ctx.Barrier(6), ctx.Queue()
        runs = [ctx.Process(target=_contend, args=(str(out), barrier, results)) for _ in range(6)]
        for run in runs:
            run.start()
        for run in runs:
            run.join(10)
        outcomes = sorted(results.get(timeout=5)[0] for _ in runs)
        assert outcomes == ["refused"] * 5 + ["won"]
        assert not lock_path(out).exists()
        assert not list(tmp_path.glob("*.takeover"))


class SlowModel:
    def __init__(self):
        self.started = 0

    async def complete(self, request):
        self.started += 1
        await asyncio.sleep(0.01 if int(request.request_id[1:]) % 2 else 10)
        return Completion(content="ok", model="m", provider="slow")


def write_lines(path, n):
    with open(path, "w") as f:
        for i in range(n):
            body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
            f.write(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")


def test_run_batch_refuses_an_output_another_run_writes_and_leaves_it_alone(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(source, 3)
    out.write_bytes(b'{"torn": ')  # resuming would cut this: it must stay, the file is not ours
    model = SlowModel()
    with OutputLock(out):
        with pytest.raises(OutputInUseError):
            asyncio.run(run_batch(source, out, lambda name: model, lambda name: True, BatchOptions(progress=False)))
    assert out.read_bytes() == b'{"torn": ' and model.started == 0


def test_a_cancelled_run_leaves_whole_records_and_resumes_to_one_per_line(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    n = 40
    write_lines(source, n)
    model = SlowModel()

    async def cancelled_midway():
        job = asyncio.create_task(run_batch(source, out, lambda name: model, lambda name: True, BatchOptions(progress=False)))
        while not out.exists() or len(out.read_bytes().splitlines()) < n // 2:
            await asyncio.sleep(0.01)
        job.cancel()  # what Ctrl-C does to asyncio.run's main task
        with pytest.raises(asyncio.CancelledError):
            await job
        return len(asyncio.all_tasks())

    assert asyncio.run(cancelled_midway()) == 1  # no call left running
    partial = out.read_bytes()
    assert partial.endswith(b"\n") and len(partial.splitlines()) == n // 2  # the slow half never finished
    assert not lock_path(out).exists()
    fast = SlowModel()
    fast.complete = lambda request: asyncio.sleep(0, Completion(content="ok", model="m", provider="fast"))
    asyncio.run(run_batch(source, out, lambda name: fast, lambda name: True, BatchOptions(progress=False)))
    ids = [json.loads(raw)["custom_id"] for raw in out.read_bytes().splitlines()]
    assert sorted(ids) == sorted(f"c{i}" for i in range(n))
