"""The OpenAI Batch line format: an input line read into a request, a record written for it.

    {"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}    one input line
    {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}  one output record

A line for `/v1/responses` holds a Responses body (translated by `responses_format`); its record's
body is a Response object.

A record's id carries its input line's number (`batch_req_<line>_<random>`), so resuming knows
which lines, bad ones included, are answered already.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import msgspec

from orchestray.errors import RequestError
from orchestray.messages import ChatRequest, Completion
from orchestray.openai_format import completion_body, parse_chat_body, request_params
from orchestray.responses_format import new_response_id, parse_responses_body, response_body

__all__ = [
    "BatchError",
    "BatchResponse",
    "OutputRecord",
    "Line",
    "record_id",
    "line_of",
    "parse_line",
    "error_record",
    "answer_record",
    "encode_record",
    "decode_record_view",
    "write_request_lines",
]


class BatchError(msgspec.Struct):
    code: str
    message: str


class BatchResponse(msgspec.Struct):
    status_code: int
    request_id: str
    body: dict[str, Any]


class OutputRecord(msgspec.Struct):
    """One output line. `custom_id` is null only for a line that had none (invalid JSON, say)."""

    id: str
    custom_id: str | None
    response: BatchResponse | None
    error: BatchError | None


class RecordView(msgspec.Struct):
    """What resuming needs from an earlier output line."""

    id: str
    error: Any = None


_encode = msgspec.json.Encoder().encode
decode_record_view = msgspec.json.Decoder(RecordView).decode
_decode_line = msgspec.json.Decoder().decode
_ID_PREFIX = "batch_req_"


def encode_record(record: OutputRecord) -> bytes:
    return _encode(record) + b"\n"


def record_id(line: int) -> str:
    return f"{_ID_PREFIX}{line}_{uuid.uuid4().hex[:12]}"


def line_of(record_id: str) -> int | None:
    """The input line a record answers, or None for a record that is not ours."""
    if not record_id.startswith(_ID_PREFIX):
        return None
    number = record_id[len(_ID_PREFIX) :].split("_", 1)[0]
    return int(number) if number.isdigit() else None


@dataclass
class Line:
    number: int
    custom_id: str
    request: ChatRequest
    echo: dict[str, Any] | None = None  # a /v1/responses line: what its Response repeats of the body


def error_record(number: int, code: str, message: str, custom_id: str | None = None) -> OutputRecord:
    return OutputRecord(record_id(number), custom_id, None, BatchError(code, message))


def answer_record(number: int, custom_id: str, completion: Completion, model: str,
                  echo: dict[str, Any] | None = None) -> OutputRecord:
    if echo is not None:
        body = response_body(echo, new_response_id(), int(time.time()), completion=completion)
    else:
        body = completion_body(completion, f"chatcmpl-{uuid.uuid4().hex[:24]}", model=model)
    return OutputRecord(record_id(number), custom_id, BatchResponse(200, f"req_{uuid.uuid4().hex[:24]}", body), None)


def parse_line(raw: bytes, number: int, seen_ids: set[int], route: str | None,
               known: Callable[[str], bool]) -> Line | OutputRecord:
    """A valid line, or the error record that answers it. `seen_ids` holds one 64-bit digest per
    custom_id seen so far: duplicates are caught in a fraction of the ids' own memory."""

    def bad(code: str, message: str, custom_id: str | None = None) -> OutputRecord:
        return error_record(number, code, f"line {number}: {message}", custom_id)

    if not raw.strip():
        return bad("empty_line", "the line is empty")
    try:
        item = _decode_line(raw)
    except msgspec.DecodeError as err:
        return bad("invalid_json", f"not valid JSON ({err})")
    if not isinstance(item, dict):
        return bad("invalid_line", "a line must be a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return bad("missing_custom_id", "`custom_id` must be a non-empty string")
    digest = int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=8).digest(), "little")
    if digest in seen_ids:
        return bad("duplicate_custom_id", f"custom_id {custom_id!r} appears on an earlier line", custom_id)
    seen_ids.add(digest)
    if item.get("method", "POST") != "POST":
        return bad("invalid_method", f"method must be POST, not {item.get('method')!r}", custom_id)
    url = item.get("url", "/v1/chat/completions")
    if url not in ("/v1/chat/completions", "/v1/responses"):
        return bad("invalid_url", f"url must be /v1/chat/completions or /v1/responses, not {url!r}", custom_id)
    extra = set(item) - {"custom_id", "method", "url", "body"}
    if extra:
        return bad("invalid_line", f"unknown field(s): {', '.join(sorted(extra))}", custom_id)
    body = item.get("body")
    if isinstance(body, dict) and route:
        body = {**body, "model": route}
    echo = None
    try:
        if url == "/v1/responses":
            request, echo = _responses_line(body, custom_id)
        else:
            request = parse_chat_body(body, request_id=custom_id)
    except RequestError as err:
        return bad("invalid_body", str(err), custom_id)
    if body.get("stream"):
        return bad("invalid_body", "stream is not supported in batch jobs", custom_id)
    if not known(request.model):
        return bad("model_not_found", f"unknown model {request.model!r}: no provider or route has that name", custom_id)
    return Line(number, custom_id, request, echo)


def _responses_line(body: Any, custom_id: str) -> tuple[ChatRequest, dict[str, Any]]:
    call = parse_responses_body(body, request_id=custom_id)
    if call.previous_response_id is not None:
        raise RequestError("previous_response_id: batch lines stand alone (send the earlier turns as input items)",
                           param="previous_response_id")
    return call.request, {**call.echo, "store": False}  # a batch keeps its answers in the output file


def write_request_lines(requests: Iterable[Mapping[str, Any] | ChatRequest], path: Path) -> None:
    """Batch input lines for what the Python API was given: batch lines (`{"custom_id", "body"}`),
    chat bodies or `ChatRequest`s, numbered from 0 as their custom_id when they have none."""
    with path.open("wb") as f:
        for i, item in enumerate(requests):
            if isinstance(item, ChatRequest):
                line: Any = {"custom_id": item.request_id or str(i), "body": request_params(item, item.model)}
            elif isinstance(item, Mapping) and "body" in item:
                line = {"custom_id": str(i), "method": "POST", "url": "/v1/chat/completions", **item}
            elif isinstance(item, Mapping):
                line = {"custom_id": str(i), "body": dict(item)}
            else:
                raise TypeError(f"request {i}: a batch line, a chat body or a ChatRequest, not {type(item).__name__}")
            f.write(_encode(line) + b"\n")
