"""Request bodies read as JSON defines them: NaN, Infinity and numbers beyond a float refused.

Python's json reads all three (1e400 as inf). None is JSON: a client library that sent one has a
bug, and echoed back (a Response's tools, a stored body) they break the answer's encoding after
the provider was paid. Every endpoint reads its body through `loads`, so each refuses them with a
400 before any call.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

__all__ = ["loads", "StrictJSONRoute"]


class _NotJSON(ValueError):
    """Raised inside the decoder; `loads` gives it the text's position."""


def _constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON number", name)


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):
        raise _NotJSON(f"{number} is out of a float's range", number)
    return value


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)  # made once: it is on every request


def loads(body: bytes | str) -> Any:
    """The body as JSON, or `json.JSONDecodeError` saying what was wrong and where."""
    text = body.decode() if isinstance(body, bytes) else body
    try:
        return _DECODER.decode(text)
    except _NotJSON as err:
        message, token = err.args
        raise json.JSONDecodeError(message, text, max(text.find(token), 0)) from None


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A FastAPI route whose JSON body goes through `loads`: FastAPI turns its
    `JSONDecodeError` into the usual `json_invalid` validation error."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict(request: Request):
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict
