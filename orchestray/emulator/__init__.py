"""A local provider emulator: OpenAI and Anthropic wire formats over HTTP, answered by simulated models.

Tests and benchmarks point the real SDKs at it. It enforces per-model rpm/tpm limits the way
providers do, over a sliding one-second window, calendar seconds or a bucket (`limit_mode`),
with 429s carrying `retry-after` and rate-limit headers on every answer; injects latency, faults and hangs,
and counts what it saw (`GET /stats`; `POST /reset`; `POST /config` to change settings live).

    async with Emulator(EmulatorOptions(rpm=600)) as emu:        # in the test's own loop
        client = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="test")

    with run_in_thread(EmulatorOptions()) as emu: ...           # sync tests
    with run_in_process(EmulatorOptions()) as emu: ...          # benchmarks: its own core
"""

from ._options import API_KEY_ENV, EmulatorOptions, add_arguments, options_from_args, options_to_args
from ._run import EmulatorHandle, run_in_process, run_in_thread, serve
from ._server import Emulator

__all__ = [
    "Emulator",
    "EmulatorOptions",
    "EmulatorHandle",
    "run_in_thread",
    "run_in_process",
    "serve",
    "add_arguments",
    "options_from_args",
    "options_to_args",
    "API_KEY_ENV",
]
