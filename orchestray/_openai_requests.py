"""`ChatRequest` to the OpenAI SDK's request parameters: what the OpenAI backend sends."""

from __future__ import annotations

from typing import Any

from orchestray.messages import (
    AudioPart, ChatRequest, FilePart, ImagePart, Message, Part, ResponseFormat, TextPart, Tool, ToolCall
)


def _part_dict(part: Part) -> dict[str, Any]:
    match part:
        case TextPart(text=text):
            return {"type": "text", "text": text}
        case ImagePart(url=url, detail=detail):
            image: dict[str, Any] = {"url": url}
            if detail is not None:
                image["detail"] = detail
            return {"type": "image_url", "image_url": image}
        case AudioPart(data=data, format=fmt):
            return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
        case FilePart():
            file = {k: v for k, v in (("file_id", part.file_id), ("file_data", part.file_data),
                                      ("filename", part.filename)) if v is not None}
            return {"type": "file", "file": file}
    raise TypeError(f"not a content part: {part!r}")


def tool_call_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def message_dict(m: Message, developer_as_system: bool = False) -> dict[str, Any]:
    """A message as OpenAI's request holds it."""
    role = "system" if developer_as_system and m.role == "developer" else m.role
    out: dict[str, Any] = {"role": role}
    content = m.content
    if isinstance(content, tuple):
        out["content"] = [_part_dict(p) for p in content]
    elif content is None or (content == "" and m.tool_calls):
        out["content"] = None
    else:
        out["content"] = content
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [tool_call_dict(c) for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.refusal is not None:
        out["refusal"] = m.refusal
    return out


def tool_dict(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def response_format_dict(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    spec: dict[str, Any] = {"name": fmt.name or "response"}
    for key, value in (("description", fmt.description), ("schema", fmt.schema), ("strict", fmt.strict)):
        if value is not None:
            spec[key] = value
    return {"type": "json_schema", "json_schema": spec}


# Fields sent as they are when set.
_SCALAR_FIELDS = (
    "temperature", "top_p", "top_k", "seed", "parallel_tool_calls", "logprobs", "top_logprobs",
    "presence_penalty", "frequency_penalty", "logit_bias", "reasoning_effort", "user", "metadata",
    "store", "tool_choice",
)


def request_params(
    request: ChatRequest,
    model: str,
    max_tokens_field: str = "max_completion_tokens",
    developer_as_system: bool = False,
) -> dict[str, Any]:
    """The JSON body of `POST /chat/completions` for a request: only what the caller set,
    `extra_body` merged in last (the SDKs' own rule)."""
    params: dict[str, Any] = {
        "model": model,
        "messages": [message_dict(m, developer_as_system) for m in request.messages],
    }
    if request.max_tokens is not None:
        params[max_tokens_field] = request.max_tokens
    for field in _SCALAR_FIELDS:
        value = getattr(request, field)
        if value is not None:
            params[field] = value
    if request.stop:
        params["stop"] = list(request.stop)
    if request.n != 1:
        params["n"] = request.n
    if request.tools:
        params["tools"] = [tool_dict(t) for t in request.tools]
    if request.response_format is not None:
        params["response_format"] = response_format_dict(request.response_format)
    if request.extra_body:
        params.update(request.extra_body)
    return params
