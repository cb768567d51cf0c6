"""Batch jobs on the shared Ray instance: crashes, killed actors, faults and routes, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml

from orchestray.actors.batch import run_batch_job
from orchestray.batch import BatchOptions
from orchestray.config import parse_config
from orchestray.emulator import EmulatorOptions, run_in_process
from orchestray.simulated import arithmetic_questions

pytestmark = pytest.mark.integration


def write_input(path, n, models):
    questions = arithmetic_questions(n, seed=3)
    with open(path, "w") as f:
        for i, q in enumerate(questions):
            body = {"model": models[i % len(models)], "messages": [{"role": "user", "content": q.prompt}], "max_tokens": 48}
            f.write(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def assert_one_record_per_line(path, n):
    ids = [r["custom_id"] for r in records(path)]
    assert len(ids) == n and sorted(ids) == sorted(f"c{i}" for i in range(n))


def kill_providers(ray_session, config):
    for p in config.providers:
        try:
            ray_session.kill(ray_session.get_actor(p.name, namespace="orchestray"))
        except ValueError:
            pass


def test_a_driver_killed_mid_run_resumes_with_exactly_one_line_per_request(ray_session, tmp_path):
    name = f"kill-{uuid.uuid4().hex[:6]}"
    config_data = {"providers": [{"name": name, "kind": "simulated", "simulated": {"latency_ms": 40, "latency_sigma": 0.5},
                                  "limits": {"max_concurrency": 16}}]}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config_data))
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    n = 600
    write_input(source, n, [name])
    address = ray_session.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "orchestray.cli", "batch", str(source), "-o", str(out), "--config", str(config_file),
               "--address", address, "-q", "--max-in-flight", "16"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 100):
            time.sleep(0.05)
        assert driver.poll() is None, "the driver finished before it could be killed: make the job longer"
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    partial = len(records(out)) if out.read_bytes().endswith(b"\n") else None
    assert partial is None or 100 <= partial < n
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "already done" in finished.stdout
    assert_one_record_per_line(out, n)
    assert all(r["error"] is None for r in records(out))
    kill_providers(ray_session, parse_config(config_data))


def test_a_provider_actor_killed_mid_run_loses_nothing(ray_session, tmp_path):
    name = f"crash-{uuid.uuid4().hex[:6]}"
    config = parse_config({"providers": [{"name": name, "kind": "simulated", "simulated": {"latency_ms": 100}}]})
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    n = 300
    write_input(source, n, [name])
    crashed = threading.Event()

    def crash():
        # Once a third of the lines are answered, the provider's process dies; Ray restarts it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < n // 3):
            time.sleep(0.02)
        ray_session.kill(ray_session.get_actor(name, namespace="orchestray"), no_restart=False)
        crashed.set()

    threading.Thread(target=crash, daemon=True).start()
    result = run_batch_job(str(source), str(out), config, BatchOptions(progress=False, max_in_flight=16))
    assert crashed.is_set(), "the provider was never killed: the job ended first"
    assert_one_record_per_line(out, n)
    # Calls caught in the crash were retried on the restarted actor, or are error records that
    # --retry-errors answers.
    if result.failed:
        run_batch_job(str(source), str(out), config, BatchOptions(progress=False, retry_errors=True))
        assert_one_record_per_line(out, n)
    assert all(r["error"] is None for r in records(out))
    kill_providers(ray_session, config)


def test_faults_and_an_overstated_limit_at_the_emulator_are_absorbed(ray_session, tmp_path, emulator):
    emulator.configure(rpm=1200, fault_rate=0.1, seed=9)
    name = f"storm-{uuid.uuid4().hex[:6]}"
    # The provider is told it may send three times what the emulator allows. Before the limiter
    # read rate-limit headers this was a 429 storm; now the first answers' headers teach the
    # lower limit, so at most the first window draws 429s, and every line is answered.
    config = parse_config({"providers": [{"name": name, "kind": "openai", "model": "sim-small", "base_url": emulator.openai_base_url,
                                          "limits": {"rpm": 3600}, "max_retries": 10}]})
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    n = 200
    write_input(source, n, [name])
    result = run_batch_job(str(source), str(out), config, BatchOptions(progress=False, max_in_flight=64))
    stats = emulator.stats()
    assert stats["faults"] > 0 and stats["rate_limited"] <= 20
    assert result.failed == 0 and result.succeeded == n
    assert_one_record_per_line(out, n)
    assert result.as_dict()["by_provider"][name]["rate_limited"] == stats["rate_limited"]
    kill_providers(ray_session, config)


def test_routes_as_the_model(ray_session, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    small, large = f"small-{suffix}", f"large-{suffix}"
    sim = {"latency_ms": 5}
    config = parse_config({
        "providers": [{"name": small, "kind": "simulated", "simulated": {**sim, "accuracy": 0.6}, "price": {"input_per_1k": 1, "output_per_1k": 1}},
                      {"name": large, "kind": "simulated", "simulated": {**sim, "accuracy": 0.97}, "price": {"input_per_1k": 20, "output_per_1k": 20}}],
        "routes": {f"cheap-{suffix}": {"pattern": "cascade", "providers": [small, large]},
                   f"vote-{suffix}": {"pattern": "ensemble", "providers": [small], "samples": 3, "temperature": 0.7}},
    })
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    n = 60
    write_input(source, n, [f"cheap-{suffix}", f"vote-{suffix}"])
    result = run_batch_job(str(source), str(out), config, BatchOptions(progress=False), workers=2)
    assert result.succeeded == n
    kinds = {r["response"]["body"]["orchestray"]["trace"]["kind"] for r in records(out)}
    assert kinds == {"cascade", "ensemble"}
    assert set(result.by_model) == {f"cheap-{suffix}", f"vote-{suffix}"} and set(result.by_provider) == {small, large}
    kill_providers(ray_session, config)


def test_a_3000_line_batch_through_5xx_and_hangs_answers_every_line_five_runs_in_a_row(ray_session, tmp_path):
    """The issue's batch: one call in ten a 5xx, one in a hundred hung. Hung calls made together
    time out together; that must neither open the circuit nor cost a line, run after run.

    The emulator runs in its own process: in this one, the batch driver's 3,000 lines hold the
    GIL, and an emulator thread starved of it makes healthy calls time out."""
    with run_in_process(EmulatorOptions()) as emulator:
        _five_faulty_runs(ray_session, tmp_path, emulator)


def _five_faulty_runs(ray_session, tmp_path, emulator):
    emulator.configure(fault_rate=0.1, hang_rate=0.01, hang_s=4.0)
    name = f"faulty-{uuid.uuid4().hex[:6]}"
    config = parse_config({"providers": [{"name": name, "kind": "openai", "model": "sim-small",
                                          "base_url": emulator.openai_base_url, "timeout_s": 2.0, "max_retries": 6}]})
    n = 3000
    source = tmp_path / "in.jsonl"
    write_input(source, n, [name])
    answered = []
    try:
        for run in range(5):
            emulator.configure(seed=15 + run)  # a different draw of faults and hangs each run
            out = tmp_path / f"out{run}.jsonl"
            result = run_batch_job(str(source), str(out), config, BatchOptions(progress=False))
            assert_one_record_per_line(out, n)
            errors = [r["error"] for r in records(out) if r["error"] is not None]
            assert not [e for e in errors if e["code"] == "circuit_open"], errors[:3]
            answered.append(result.succeeded)
            assert result.succeeded >= 0.999 * n, (run, errors[:3])
        stats = emulator.stats()
        assert stats["faults"] > 5 * n * 0.05 and stats["hangs"] > 5 * n * 0.005  # the faults did happen
    finally:
        print(f"answered per run: {answered} of {n}; emulator: {emulator.stats()}")
        kill_providers(ray_session, config)


def batch_command(source, out, config_file, ray_session, *extra):
    address = ray_session.get_runtime_context().gcs_address
    return [sys.executable, "-m", "orchestray.cli", "batch", str(source), "-o", str(out), "--config", str(config_file),
            "--address", address, "-q", *extra]


def wait_for_lines(out, count, process, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < count):
        assert process.poll() is None, "the run ended before it had written enough lines"
        time.sleep(0.05)
    assert process.poll() is None, "the driver finished too soon: make the job longer"


def start_slow_batch(ray_session, tmp_path, prefix, n):
    """A CLI batch of n lines against a simulated provider, started in the background."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    data = {"providers": [{"name": name, "kind": "simulated", "simulated": {"latency_ms": 40, "latency_sigma": 0.5},
                           "limits": {"max_concurrency": 16}}]}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(data))
    source, out, log = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "driver.log"
    write_input(source, n, [name])
    command = batch_command(source, out, config_file, ray_session, "--max-in-flight", "16")
    with log.open("w") as stderr:
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=os.environ.copy())
    return parse_config(data), command, out, log, driver


def test_a_second_run_on_the_same_output_is_refused_and_the_first_writes_one_line_per_input(ray_session, tmp_path):
    n = 600
    config, command, out, log, first = start_slow_batch(ray_session, tmp_path, "twice", n)
    try:
        wait_for_lines(out, 100, first)
        started = time.monotonic()
        second = subprocess.run(command, capture_output=True, text=True, timeout=120, env=os.environ.copy())
        refused_in = time.monotonic() - started
        assert first.poll() is None, "the first run ended before the second was refused: make the job longer"
        assert second.returncode == 2, second.stderr[-2000:]
        assert "being written by another run" in second.stderr
        assert f"pid {first.pid}" in second.stderr and "host " in second.stderr and "started " in second.stderr
        assert first.wait(300) == 0, log.read_text()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    print(f"second run refused in {refused_in:.2f}s")
    assert_one_record_per_line(out, n)
    assert all(r["error"] is None for r in records(out))
    assert not (tmp_path / "out.jsonl.lock").exists()
    kill_providers(ray_session, config)


def test_ctrl_c_mid_batch_leaves_a_whole_output_that_the_same_command_resumes(ray_session, tmp_path):
    n = 600
    config, command, out, log, driver = start_slow_batch(ray_session, tmp_path, "sigint", n)
    try:
        wait_for_lines(out, 100, driver)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(60) == 130, log.read_text()[-2000:]
        assert "re-run the same command to resume" in log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
    partial = out.read_bytes()
    assert partial.endswith(b"\n")  # whole records only: nothing torn to cut on resume
    done = records(out)
    assert 100 <= len(done) < n and len({r["custom_id"] for r in done}) == len(done)
    assert all(r["error"] is None for r in done)  # in-flight lines were cancelled, not failed
    assert not (tmp_path / "out.jsonl.lock").exists()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"{len(done)} already done" in finished.stdout
    assert_one_record_per_line(out, n)
    assert all(r["error"] is None for r in records(out))
    kill_providers(ray_session, config)
