"""What the emulator's two wire formats share: the decoded `Call`, the `Dialect` protocol the server's
one request flow asks for bytes, and the request checks and errors both formats make."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Protocol

import msgspec

from orchestray.messages import ChatRequest, Tool
from orchestray.simulated import SimAnswer

from ._quota import QuotaState

_encode = msgspec.json.Encoder().encode
_STREAM_PIECES = 4


class WireError(Exception):
    """The request is malformed: answered 400 in the caller's format."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class Call:
    """A decoded request, whatever its format; `request.n` is the number of choices."""

    request: ChatRequest
    stream: bool
    include_usage: bool  # OpenAI streams: send a final usage chunk
    max_output: int  # output tokens reserved at admission


def _decode_error(err: msgspec.MsgspecError) -> WireError:
    unknown = _UNKNOWN_FIELD.match(str(err))
    if unknown and unknown.group(2) in (None, ""):  # a top-level field the API does not have
        return WireError(f"{unknown.group(1)}: unknown field (not a parameter of this API)", unknown.group(1))
    if isinstance(err, msgspec.ValidationError):
        # msgspec says where: "... - at `$.messages[1].tool_calls[0]`"; that path is the param.
        where = re.search(r"at `\$\.?([^`]*)`", str(err))
        return WireError(f"invalid request body: {err}", where.group(1) or None if where else None)
    return WireError(f"request body is not valid JSON: {err}")


_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `([^`]*)`(?: - at `\$\.?([^`]*)`)?")


def _unsupported(field: str) -> WireError:
    return WireError(f"{field}: not supported by the emulator's simulated models", field)


def _is_url(url: str) -> bool:
    return url.startswith(("http://", "https://")) or (url.startswith("data:") and "," in url)


def _check_tool_choice(choice: str | dict | None, tools: tuple[Tool, ...], param: str) -> None:
    """The checks the APIs make: a named tool must be offered, and a choice needs tools."""
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if not isinstance(allowed, dict) or allowed.get("mode") not in ("auto", "required"):
            raise WireError(f"{param}.allowed_tools: needs mode auto or required, and tools", param)
        for entry in allowed.get("tools") or ():
            if not isinstance(entry, dict) or entry.get("type") != "function":
                raise _unsupported(f"{param}.allowed_tools.tools")
            _check_tool_choice(entry, tools, param)
    elif isinstance(choice, dict):
        if choice.get("type") == "custom":
            raise _unsupported(param)
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if not any(t.name == name for t in tools):
            raise WireError(f"{param}: names tool {name!r}, which is not in tools", param)
    elif choice not in (None, "none", "auto") and not tools:
        raise WireError(f"{param}: {choice!r} needs tools", param)


class Dialect(Protocol):
    """One provider's wire format: what the server's single request flow asks of it."""

    name: str

    def authorized(self, headers: Mapping[str, str], key: str) -> bool: ...

    def decode(self, body: bytes) -> Call:
        """The request, or WireError saying what is wrong with it."""
        ...

    def error(self, status: int, message: str, *, kind: str | None = None, param: str | None = None) -> bytes:
        """An error body in this provider's shape; `kind` overrides the type (OpenAI 429s)."""
        ...

    def completion(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes: ...

    # A stream is: open (the first events), pieces (the server paces them: text deltas, tool-call
    # deltas, every choice's), close (finish reasons, usage, end).
    def stream_open(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes: ...

    def stream_pieces(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> list[bytes]: ...

    def stream_close(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes: ...

    def quota_headers(self, quotas: list[QuotaState], wall_now: float) -> dict[str, str]: ...

    def fault_status(self, rng: Random) -> int:
        """The status of an injected fault, when the options name none."""
        ...

    def new_id(self, number: int) -> str: ...


def _rounds(per_choice: list[list[bytes]]) -> list[bytes]:
    """Interleave the choices' pieces, one of each choice per round, as n streams arrive."""
    out = []
    for i in range(max((len(p) for p in per_choice), default=0)):
        out.append(b"".join(p[i] for p in per_choice if i < len(p)))
    return [frame for frame in out if frame]
