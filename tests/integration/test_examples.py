"""README's "From Python" blocks that use Ray, and the Ray examples, on the session's cluster."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from readme_blocks import needs_ray, python_blocks

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_readmes_ray_python_blocks_run(ray_session):
    on_ray = [block for block in python_blocks() if needs_ray(block)]
    assert len(on_ray) == 2
    for block in on_ray:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize(("script", "says"), [("python_api.py", "batch: 20 of 20 answered"),
                                              ("ray_data.py", "200 rows out of 200; 0 failed")])
def test_the_ray_examples_run(ray_session, script, says):
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    out = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert says in out.stdout
