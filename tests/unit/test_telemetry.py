"""OpenTelemetry export of a request's span tree, through the SDK's in-memory exporter."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from orchestray.config import parse_config
from orchestray.errors import RateLimitedError
from orchestray.layers import SEQUENTIAL
from orchestray.messages import ChatRequest, Message, Span
from orchestray.patterns import PATTERNS
from orchestray.registry import Registry
from orchestray.telemetry import Telemetry, TelemetryConfig, continue_trace
from orchestray.testing import ScriptedModel

CONFIG = {
    "providers": [{"name": "small", "kind": "openai", "model": "gpt-4o-mini", "api_key_env": None},
                  {"name": "large", "kind": "anthropic", "model": "claude-x", "api_key_env": None}],
    "routes": {"cheap": {"pattern": "fallback", "providers": ["small", "large"]}},
    "telemetry": {"otlp_endpoint": "http://127.0.0.1:1"},
    "guardrails": {"sets": {"pii": {"input": {"redact": ["email"]}}}, "apply": {"*": ["pii"]}},
}


def _registry(models):
    config = parse_config(CONFIG)
    registry = Registry(config, lambda p: models[p.name])
    exporter = InMemorySpanExporter()
    registry.telemetry = Telemetry(config.telemetry, exporter=exporter)
    return registry, exporter


def _ask(text="hi"):
    return ChatRequest(messages=(Message("user", text),), max_tokens=20, temperature=0)


async def test_a_route_call_exports_one_tree_in_the_genai_conventions():
    small = ScriptedModel(RateLimitedError(provider="small"), name="small", model="gpt-4o-mini")
    large = ScriptedModel("ok", name="large", model="claude-x-2025", cost=0.002)
    registry, exporter = _registry({"small": small, "large": large})
    await registry.get("cheap").complete(_ask("mail ada@example.com"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"fallback cheap", "chat gpt-4o-mini", "chat claude-x"}
    root, call, failed = spans["fallback cheap"], spans["chat claude-x"], spans["chat gpt-4o-mini"]
    assert failed.status.status_code == StatusCode.ERROR and failed.parent.span_id == root.context.span_id
    assert call.parent.span_id == root.context.span_id and call.context.trace_id == root.context.trace_id
    assert call.kind == SpanKind.CLIENT and root.kind == SpanKind.INTERNAL
    a = call.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "anthropic" and a["gen_ai.system"] == "anthropic"
    assert a["gen_ai.request.model"] == "claude-x" and a["gen_ai.response.model"] == "claude-x-2025"
    assert a["gen_ai.usage.input_tokens"] == 5 and a["gen_ai.usage.output_tokens"] == 3
    assert a["orchestray.data.guardrails.redacted.email"] == 1
    r = root.attributes
    assert r["orchestray.pattern"] == "fallback" and r["gen_ai.request.max_tokens"] == 20
    assert r["gen_ai.response.finish_reasons"] == ("stop",) and r["orchestray.cost_usd"] == pytest.approx(0.002)


async def test_an_incoming_traceparent_is_continued_and_a_failure_is_an_error_span():
    small = ScriptedModel(RateLimitedError("slow down", provider="small"), name="small")
    registry, exporter = _registry({"small": small, "large": small})
    token = continue_trace("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    try:
        with pytest.raises(RateLimitedError):
            await registry.get("small").complete(_ask())
    finally:
        token.var.reset(token)
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.parent.span_id == 0xB7AD6B7169203331
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "rate_limited"


async def test_a_stream_exports_once_it_is_done():
    registry, exporter = _registry({"small": ScriptedModel("one two", name="small"), "large": ScriptedModel()})
    chunks = [c async for c in registry.get("small").stream(_ask())]
    assert chunks[-1].done
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat gpt-4o-mini" and span.attributes["gen_ai.provider.name"] == "openai"


def test_the_endpoint_gets_the_traces_path():
    assert TelemetryConfig(otlp_endpoint="http://c:4318").traces_url() == "http://c:4318/v1/traces"
    assert TelemetryConfig(otlp_endpoint="http://c:4318/v1/traces/").traces_url() == "http://c:4318/v1/traces"


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_members_are_laid_out_in_turn_exactly_for_the_tables_sequential_patterns(pattern):
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(TelemetryConfig(otlp_endpoint="http://127.0.0.1:1"), exporter=exporter)
    members = [Span(name=f"m{i}", model=f"m{i}", latency_s=1.0) for i in range(2)]
    telemetry.export(Span(name="r", kind=pattern, latency_s=2.0, children=members), _ask(), 0, 2_000_000_000, {},
                     sequential=SEQUENTIAL)
    first, second = sorted((s for s in exporter.get_finished_spans() if s.name != f"{pattern} r"), key=lambda s: s.name)
    in_turn = second.start_time == first.end_time == 1_000_000_000
    side_by_side = second.start_time == first.start_time == 0
    assert (in_turn, side_by_side) == ((True, False) if PATTERNS[pattern].sequential else (False, True))
    assert PATTERNS["fallback"].sequential and not PATTERNS["race"].sequential  # the table says which
