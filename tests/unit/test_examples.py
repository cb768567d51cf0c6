"""README's "From Python" blocks and examples/python_api.py, on the local runtime (no Ray)."""

import subprocess
import sys
from pathlib import Path

from readme_blocks import needs_ray, python_blocks

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_readmes_local_python_blocks_run():
    local = [block for block in python_blocks() if not needs_ray(block)]
    assert len(local) == 2
    for block in local:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


def test_the_python_api_example_runs_without_ray():
    out = subprocess.run([sys.executable, str(EXAMPLES / "python_api.py"), "--runtime", "local"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "batch: 20 of 20 answered" in out.stdout and "refused: vote:" in out.stdout
