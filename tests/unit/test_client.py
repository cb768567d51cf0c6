"""The Python API on the local runtime: providers and coordinators in this process, no Ray."""

import subprocess
import sys

import pytest

import orchestray
from orchestray import AsyncClient

from client_cases import *  # noqa: F403 - the shared bodies, run here on runtime="local"
from client_cases import api_config

NAMES = {"small": "small", "large": "large", "flaky": "flaky"}


@pytest.fixture
def names():
    return NAMES


@pytest.fixture
async def client():
    async with AsyncClient(api_config(NAMES), runtime="local") as client:
        yield client


def test_the_local_runtime_never_imports_ray():
    script = (
        "import sys, asyncio, orchestray\n"
        "async def main():\n"
        "    async with orchestray.AsyncClient(runtime='local') as c:\n"
        "        await c.complete('cheap', 'What is 2 + 2?')\n"
        "        [r async for r in c.batch([{'model': 'vote', 'messages': [{'role': 'user', 'content': 'hi'}]}])]\n"
        "asyncio.run(main())\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_config_comes_as_a_path_text_dict_or_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("providers:\n  - {name: only, kind: simulated}\n")
    for config in (path, str(path), path.read_text(), {"providers": [{"name": "only", "kind": "simulated"}]},
                   orchestray.load_config(path)):
        assert AsyncClient(config, runtime="local").models() == ["only"]
    with pytest.raises(orchestray.ConfigError, match=r"providers\[0\]\.kind"):
        AsyncClient({"providers": [{"name": "x", "kind": "psychic"}]}, runtime="local")
    with pytest.raises(ValueError, match="runtime"):
        AsyncClient(runtime="cloud")


def test_public_names_are_exported_explicitly():
    assert {"AsyncClient", "Client", "Completion", "Chunk", "Span", "Message", "ChatRequest", "Config", "load_config",
            "OrchestrayError", "RateLimitedError"} <= set(orchestray.__all__)
    assert all(hasattr(orchestray, name) for name in orchestray.__all__)
