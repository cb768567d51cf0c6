"""Request bodies as JSON defines them (serving/_json.py): the chat-completions door, through the
gateway's own validation handler, and the reader the other doors share."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from orchestray.openai_format import ChatCompletionBody
from orchestray.serving import _app
from orchestray.serving._json import StrictJSONRoute, loads

NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400"]


@pytest.fixture(scope="module")
def http():
    app = FastAPI()
    app.router.route_class = StrictJSONRoute
    app.add_exception_handler(RequestValidationError, _app._invalid)
    seen = []

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionBody):
        seen.append(body)
        return {"ok": True}

    with TestClient(app) as client:
        yield client, seen


@pytest.mark.parametrize("number", NUMBERS)
def test_loads_refuses_what_json_has_not_and_says_where(number):
    text = '{"a": [1, %s]}' % number
    with pytest.raises(json.JSONDecodeError) as caught:
        loads(text.encode())
    assert number.lstrip("-") in str(caught.value) and caught.value.pos >= text.index("[")


def test_loads_reads_ordinary_json():
    assert loads(b'{"t": 0.5, "n": 1e300, "s": "NaN"}') == {"t": 0.5, "n": 1e300, "s": "NaN"}


@pytest.mark.parametrize("where", ["temperature", "tool"])
@pytest.mark.parametrize("number", NUMBERS)
def test_chat_completions_refuse_them_with_a_400_before_the_handler(http, number, where):
    client, seen = http
    tool = '{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "default": %s}}}'
    body = ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], %s}'
            % (f'"temperature": {number}' if where == "temperature" else f'"tools": [{tool % number}]'))
    answer = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json", answer.text
    assert number.lstrip("-") in answer.json()["error"]["message"] and seen == []
    fine = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert fine.status_code == 200 and len(seen) == 1
    seen.clear()
