"""What the benchmark scripts share: the questions they ask, the neighbours they warn about, how
they print a table and write their JSON. Imported as `_common` (the scripts run from bench/)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path


def question(i: int) -> str:
    return f"What is {i % 997} + {i % 89}?"


def busy_neighbours() -> list[str]:
    """Other benchmarks, test suites and Ray instances sharing the cores (not this run's own)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.split(None, 3) for line in out.splitlines()[1:]]
    parent = {r[0]: r[1] for r in rows if len(r) == 4}
    me, launcher = str(os.getpid()), str(os.getppid())  # the launcher: `timeout`, say

    def ours(pid: str) -> bool:
        for _ in range(64):  # this process's descendants: its Ray instance, emulator, clients
            if pid in (me, launcher):
                return True
            if pid not in parent or pid == parent[pid]:
                return False
            pid = parent[pid]
        return False

    return [
        f"{pid} {pcpu}% {args[:120]}"
        for pid, _, pcpu, args in (r for r in rows if len(r) == 4)
        if not ours(pid) and any(word in args for word in ("bench/", "pytest", "raylet"))
    ]


def render_table(rows: list[tuple[str, ...]], left: int = 1) -> str:
    """Rows of cells (the first is the header) as aligned text: the first `left` columns to the
    left, the rest to the right, a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_header(benchmark: str) -> dict:
    """What every report opens with: which benchmark, when, on what machine."""
    return {
        "benchmark": benchmark,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


def write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {path}")
