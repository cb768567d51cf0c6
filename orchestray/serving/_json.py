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


def loads(body: bytes | str) -> Any:
    """The body as JSON, or `json.JSONDecodeError` saying what was wrong and where."""
    text = body.decode() if isinstance(body, bytes) else body
    return json.JSONDecoder(parse_constant=lambda name: _refuse(f"{name} is not a JSON number", text, name),
                            parse_float=lambda number: _finite(number, text)).decode(text)


def _finite(number: str, text: str) -> float:
    value = float(number)
    if not math.isfinite(value):
        _refuse(f"{number} is out of a float's range", text, number)
    return value


def _refuse(message: str, text: str, token: str):
    raise json.JSONDecodeError(message, text, max(text.find(token), 0))


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
