"""A workflow's `remote=True` Python steps run as Ray tasks on the session's cluster."""

from __future__ import annotations

import asyncio
import os

import pytest

from orchestray.workflow import COMPLETED, Workflow

pytestmark = pytest.mark.integration


def heavy(n: int) -> dict:
    return {"pid": os.getpid(), "total": sum(range(n))}


def test_remote_steps_run_as_ray_tasks_and_local_ones_stay(ray_session):
    wf = Workflow("w")
    wf.step("left", fn=heavy, inputs={"n": "input"}, remote=True)
    wf.step("right", fn=heavy, inputs={"n": "input"}, remote=True)
    wf.step("local", fn=lambda a, b: (os.getpid(), a["total"] + b["total"]), inputs={"a": "left", "b": "right"})
    result = asyncio.run(wf.run(1000, None))
    assert all(step.status == COMPLETED for step in result.steps.values())
    assert result["left"]["pid"] != os.getpid() and result["right"]["pid"] != os.getpid()
    assert result["local"] == (os.getpid(), 2 * sum(range(1000)))
