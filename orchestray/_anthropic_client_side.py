"""The Anthropic Messages wire as the Anthropic backend speaks it: a `ChatRequest` to a request body,
and an answer (a message, or its SSE events) back to a `Reply`. `anthropic_format` describes both sides."""

from __future__ import annotations

import json
from typing import Any, Iterable

from orchestray.backends._reply import Quota, Reply
from orchestray.errors import RequestError
from orchestray.messages import (
    AudioPart, ChatRequest, Chunk, FilePart, ImagePart, Message, Part, ResponseFormat, TextPart, Tool,
    ToolCall, ToolCallDelta
)

DEFAULT_MAX_TOKENS = 1024  # the API requires a value; OpenAI-style callers often send none
SAMPLING_FIELDS = ("temperature", "top_p", "top_k")  # what Anthropic's newest models refuse

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _dumps(value: Any) -> str:
    # Compact, as models write their streamed arguments, so a call reads the same either way.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ChatRequest -> a Messages API body (what the backend sends) ─────────────────────────────────


def json_tool_name(request: ChatRequest) -> str | None:
    """The name of the forced tool that carries a JSON answer, or None when no JSON is asked."""
    fmt = request.response_format
    if fmt is None or not fmt.wants_json:
        return None
    name = fmt.name or "json_answer"
    taken = {t.name for t in request.tools}
    while name in taken:
        name += "_answer"
    return name


def _part_block(part: Part, where: str) -> dict[str, Any]:
    match part:
        case TextPart(text=text):
            return {"type": "text", "text": text}
        case ImagePart():
            # `detail` is OpenAI's cost hint; Anthropic takes the image whole either way.
            data = part.data()
            if data is None:
                return {"type": "image", "source": {"type": "url", "url": part.url}}
            media, payload = data
            return {"type": "image", "source": {"type": "base64", "media_type": media, "data": payload}}
        case FilePart(file_data=file_data) if file_data:
            # OpenAI's file parts are PDFs, as Anthropic's base64 documents are.
            media, payload = "application/pdf", file_data
            if file_data.startswith("data:"):
                header, _, payload = file_data.partition(",")
                media = header[len("data:"):].split(";", 1)[0] or media
            source = {"type": "base64", "media_type": media, "data": payload}
            block: dict[str, Any] = {"type": "document", "source": source}
            if part.filename:
                block["title"] = part.filename
            return block
        case FilePart():
            raise RequestError(f"{where}: a file by file_id is not supported by the Anthropic Messages API",
                               param=where)
        case AudioPart():
            raise RequestError(f"{where}: audio input is not supported by the Anthropic Messages API", param=where)
    raise TypeError(f"not a content part: {part!r}")


def _tool_input(call: ToolCall, where: str) -> Any:
    arguments = call.parsed_arguments()
    if not isinstance(arguments, dict):
        raise RequestError(f"{where}: arguments must be a JSON object for the Anthropic Messages API", param=where)
    return arguments


def _turns(messages: Iterable[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, alternating user/assistant turns). Tool results become `tool_result`
    blocks of a user turn, and turns of one role in a row merge: the API wants them to alternate."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.name is not None:
            where = f"messages[{i}].name"
            raise RequestError(f"{where}: not supported by the Anthropic Messages API", param=where)
        if m.role in ("system", "developer"):
            system.append(m.text())
            continue
        blocks: list[dict[str, Any]]
        if m.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
            if isinstance(m.content, tuple) and any(not isinstance(p, TextPart) for p in m.content):
                result["content"] = [_part_block(p, f"messages[{i}].content[{j}]") for j, p in enumerate(m.content)]
            else:
                result["content"] = m.text()
            blocks = [result]
        elif m.role == "assistant":
            blocks = [{"type": "text", "text": text} for text in (m.text(), m.refusal or "") if text]
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name,
                 "input": _tool_input(c, f"messages[{i}].tool_calls[{j}]")}
                for j, c in enumerate(m.tool_calls)
            ]
        else:
            blocks = [_part_block(p, f"messages[{i}].content[{j}]") for j, p in enumerate(m.parts())]
            blocks = [b for b in blocks if b.get("type") != "text" or b["text"]]
        if not blocks:
            continue  # the API refuses empty turns and empty text blocks
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return system, turns


def _tool_param(tool: Tool) -> dict[str, Any]:
    param: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        param["description"] = tool.description
    param["input_schema"] = tool.parameters or {"type": "object", "properties": {}}
    if tool.strict is not None:
        param["strict"] = tool.strict
    return param


def _tool_choice(choice: str | dict[str, Any] | None) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    raise RequestError(f"tool_choice: {choice!r} is not auto, none, required or a named function", param="tool_choice")


def _json_tool(fmt: ResponseFormat, name: str) -> dict[str, Any]:
    schema = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
    description = fmt.description or "Give your final answer as this tool's input, a JSON object."
    return {"name": name, "description": description, "input_schema": schema}


def request_body(
    request: ChatRequest, model: str, *, sampling: bool = True, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The JSON body of `POST /v1/messages` for a request: only what the caller set, provider
    extras merged in last. `sampling=False` leaves out temperature, top_p and top_k."""
    system, turns = _turns(request.messages)
    body: dict[str, Any] = {"model": model, "messages": turns, "max_tokens": request.max_tokens or default_max_tokens}
    if system:
        body["system"] = "\n\n".join(system)
    tools = [_tool_param(t) for t in request.tools]
    choice = _tool_choice(request.tool_choice) if tools else None
    json_tool = json_tool_name(request)
    if json_tool is not None and (choice is None or choice["type"] in ("auto", "none")):
        # With tools on offer the model must call one: a real tool, or the answer tool.
        tools.append(_json_tool(request.response_format, json_tool))
        forced = choice is None or choice["type"] == "none"
        choice = {"type": "tool", "name": json_tool} if forced else {"type": "any"}
    if tools:
        body["tools"] = tools
    if choice is not None:
        if request.parallel_tool_calls is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if sampling:
        if request.temperature is not None and request.temperature > 1:
            raise RequestError(
                f"temperature: the Anthropic Messages API takes 0 to 1, not {request.temperature}", param="temperature"
            )
        for field in SAMPLING_FIELDS:
            value = getattr(request, field)
            if value is not None:
                body[field] = value
    if request.extra_body:
        body.update(request.extra_body)
    return body


# A Messages API answer -> Reply (what the backend hands back) ─────────────────────────────────


def _usage(usage: dict[str, Any] | None) -> tuple[int, int, int]:
    """(input tokens including cached ones, output tokens, cache reads)."""
    usage = usage or {}
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0) + cached
    return prompt, usage.get("output_tokens") or 0, cached


def _finish(stop_reason: str | None, tool_calls: int) -> str:
    finish = _FINISH.get(stop_reason or "", "stop")
    # The answer tool ended the turn with tool_use, but the caller asked for an answer, not a call.
    return "stop" if finish == "tool_calls" and not tool_calls else finish


def reply_from_message(message: dict[str, Any], json_tool: str | None = None, quota: Quota | None = None) -> Reply:
    """A Messages API `message` object as a Reply; the `json_tool`'s input becomes the text."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = _dumps(block.get("input") or {})
            if json_tool is not None and block.get("name") == json_tool:
                texts.append(arguments)
            else:
                calls.append(ToolCall(block.get("id", ""), block.get("name", ""), arguments))
        # thinking and server-tool blocks are the model's working, not its answer
    prompt, output, cached = _usage(message.get("usage"))
    return Reply(
        text="".join(texts),
        input_tokens=prompt,
        output_tokens=output,
        finish_reason=_finish(message.get("stop_reason"), len(calls)),
        model=message.get("model") or "",
        quota=quota,
        tool_calls=tuple(calls),
        cached_tokens=cached,
    )


class StreamDecoder:
    """Messages API stream events (as dicts) to the backend's pieces: text as str, tool-call
    pieces as Chunks; `reply()` once the stream has ended."""

    __slots__ = ("json_tool", "_texts", "_calls", "_blocks", "_usage", "_stop", "_model")

    def __init__(self, json_tool: str | None = None, model: str = ""):
        self.json_tool = json_tool
        self._texts: list[str] = []
        self._calls: list[list[str]] = []  # [id, name, argument pieces...]
        self._blocks: dict[int, int] = {}  # content block index -> tool call index (-1: the answer tool)
        self._usage: dict[str, Any] = {}
        self._stop: str | None = None
        self._model = model

    def feed(self, event: dict[str, Any]) -> list[str | Chunk]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                self._texts.append(delta.get("text", ""))
                return [delta.get("text", "")]
            if delta.get("type") == "input_json_delta":
                call = self._blocks.get(event.get("index", 0))
                piece = delta.get("partial_json", "")
                if call is None or not piece:
                    return []
                if call < 0:
                    self._texts.append(piece)
                    return [piece]
                self._calls[call].append(piece)
                return [Chunk(tool_calls=(ToolCallDelta(call, arguments=piece),))]
            return []  # thinking, signatures, citations
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                self._texts.append(block["text"])
                return [block["text"]]
            if block.get("type") != "tool_use":
                return []
            # The start carries `input: {}`; the arguments follow as input_json deltas.
            start = _dumps(block["input"]) if block.get("input") else ""
            if self.json_tool is not None and block.get("name") == self.json_tool:
                self._blocks[event.get("index", 0)] = -1
                if start:
                    self._texts.append(start)
                    return [start]
                return []
            index = len(self._calls)
            self._blocks[event.get("index", 0)] = index
            self._calls.append([block.get("id", ""), block.get("name", ""), start])
            return [Chunk(tool_calls=(ToolCallDelta(index, block.get("id", ""), block.get("name", ""), start),))]
        if kind == "message_start":
            message = event.get("message") or {}
            self._usage.update(message.get("usage") or {})
            self._model = message.get("model") or self._model
        elif kind == "message_delta":
            self._stop = (event.get("delta") or {}).get("stop_reason") or self._stop
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        return []

    def reply(self, quota: Quota | None = None) -> Reply:
        calls = tuple(ToolCall(c[0], c[1], "".join(c[2:]) or "{}") for c in self._calls)
        prompt, output, cached = _usage(self._usage)
        return Reply(
            text="".join(self._texts),
            input_tokens=prompt,
            output_tokens=output,
            finish_reason=_finish(self._stop, len(calls)),
            model=self._model,
            quota=quota,
            tool_calls=calls,
            cached_tokens=cached,
        )
