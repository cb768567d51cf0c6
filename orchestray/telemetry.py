"""OpenTelemetry: every request's span tree exported over OTLP/HTTP, in the GenAI semantic conventions.

    telemetry:
      otlp_endpoint: http://collector:4318      # /v1/traces is added unless the path is given
      service_name: orchestray
      headers: {x-api-key: ...}                 # or headers_env: NAME of a variable holding k=v,k=v

Needs the `otel` extra (`pip install 'orchestray[otel]'`). `TracedModel` wraps each provider and
route in `Registry._make`; the outermost call of a request (the one a door made) exports the
request's `Span` tree from `orchestray.messages` once it is finished: a provider call as a CLIENT
span `chat {model}` with `gen_ai.operation.name`, `gen_ai.provider.name` (and the older
`gen_ai.system`), `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.input_tokens`
and `output_tokens`, `gen_ai.response.finish_reasons`; a pattern as an INTERNAL span with its
decision (`orchestray.decision`, the routing or escalation reason), cost and retries. A failed
call sets `error.type` and the error status. Children's start times are rebuilt from their
latencies (sequential patterns one after another, parallel ones together), since the trace keeps
durations, not clocks. The gateway passes an incoming W3C `traceparent` in through
`continue_trace`, so the exported tree hangs under the caller's span.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from typing import Any, AsyncIterator, Collection, Mapping

from pydantic import BaseModel, ConfigDict, Field

from orchestray.errors import ConfigError, error_code
from orchestray.messages import ChatRequest, Chunk, Completion, Span

__all__ = ["TelemetryConfig", "TracedModel", "Telemetry", "continue_trace", "telemetry_for", "flush"]

# The caller's W3C trace context (a `traceparent` header's value), set by the gateway per request.
_INCOMING: contextvars.ContextVar[str | None] = contextvars.ContextVar("orchestray_traceparent", default=None)
# True inside a traced call: only the outermost exports (its tree holds the inner calls).
_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("orchestray_traced", default=False)
_SYSTEMS = {"openai": "openai", "anthropic": "anthropic", "simulated": "orchestray.simulated"}


class TelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    otlp_endpoint: str = Field(description="OTLP/HTTP base URL (http://host:4318) or its /v1/traces URL")
    service_name: str = "orchestray"
    headers: dict[str, str] = {}
    headers_env: str | None = None

    def traces_url(self) -> str:
        url = self.otlp_endpoint.rstrip("/")
        return url if url.endswith("/v1/traces") else url + "/v1/traces"


def continue_trace(traceparent: str | None) -> contextvars.Token:
    """Make `traceparent` the parent of what this task exports (the gateway, per request)."""
    return _INCOMING.set(traceparent)


class Telemetry:
    """One tracer over one span processor: OTLP/HTTP for a config, or the `exporter` given (tests
    pass the SDK's InMemorySpanExporter)."""

    def __init__(self, config: TelemetryConfig, exporter: Any = None):
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        except ImportError:
            raise ConfigError("telemetry: needs OpenTelemetry: pip install 'orchestray[otel]'") from None
        self.config = config
        self.provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
        if exporter is None:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise ConfigError("telemetry: needs the OTLP exporter: pip install 'orchestray[otel]'") from None
            headers = dict(config.headers)
            if config.headers_env:
                for pair in os.environ.get(config.headers_env, "").split(","):
                    key, sep, value = pair.partition("=")
                    if sep:
                        headers[key.strip()] = value.strip()
            processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=config.traces_url(), headers=headers), schedule_delay_millis=500)
        else:
            processor = SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("orchestray")

    def export(self, root: Span, request: ChatRequest, started_ns: int, ended_ns: int,
               kinds: Mapping[str, tuple[str, str]], completion: Completion | None = None,
               error: BaseException | None = None, sequential: Collection[str] = ()) -> None:
        """Export `root`'s tree. `kinds` gives each provider's (kind, model); the children of a
        span whose kind is in `sequential` (the pattern table's sequential patterns, from the
        caller) are laid out one after another, the others side by side."""
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        incoming = _INCOMING.get()
        parent = TraceContextTextMapPropagator().extract({"traceparent": incoming}) if incoming else None
        top = {
            "gen_ai.request.max_tokens": request.max_tokens,
            "gen_ai.request.temperature": request.temperature,
            "gen_ai.request.top_p": request.top_p,
            "gen_ai.request.seed": request.seed,
            "gen_ai.request.choice.count": request.n if request.n != 1 else None,
            "gen_ai.output.type": "json" if request.response_format and request.response_format.wants_json else None,
            "orchestray.request.model": request.model,
        }
        if completion is not None:
            top["gen_ai.response.finish_reasons"] = [c.finish_reason for c in completion.choices()]
            top["orchestray.cost_usd"] = completion.cost
        if error is not None:
            top["error.type"] = error_code(error)
        self._emit(root, parent, started_ns, ended_ns, kinds, top, error, {*sequential, "guardrail"})

    def _emit(self, span: Span, parent, start_ns: int, end_ns: int, kinds, extra: dict | None, error,
              sequential: Collection[str]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        provider = span.kind == "provider"
        attrs: dict[str, Any] = {}
        if provider:
            kind, configured = kinds.get(span.name, ("", span.model))
            system = _SYSTEMS.get(kind, kind or "orchestray")
            attrs.update({
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": system,
                "gen_ai.system": system,
                "gen_ai.request.model": configured or span.model,
                "gen_ai.response.model": span.model,
                "gen_ai.usage.input_tokens": span.input_tokens,
                "gen_ai.usage.output_tokens": span.output_tokens,
                "orchestray.provider": span.name,
            })
            name = f"chat {configured or span.model or span.name}"
        else:
            attrs.update({"orchestray.pattern": span.kind, "orchestray.route": span.name,
                          "gen_ai.operation.name": "invoke_workflow" if span.kind == "pipeline" else "chat",
                          "gen_ai.usage.input_tokens": span.input_tokens, "gen_ai.usage.output_tokens": span.output_tokens})
            name = f"{span.kind} {span.name}"
        attrs["orchestray.cost_usd"] = span.total_cost()
        attrs["orchestray.outcome"] = span.outcome
        if span.retries:
            attrs["orchestray.retries"] = span.retries
        if span.decision:
            attrs["orchestray.decision"] = span.decision
        if span.dropped:
            attrs["orchestray.dropped_fields"] = list(span.dropped)
        if span.data:
            attrs.update(_flat("orchestray.data", span.data))
        if extra:
            attrs.update(extra)
        otel = self.tracer.start_span(name, context=parent, kind=SpanKind.CLIENT if provider else SpanKind.INTERNAL,
                                      attributes={k: v for k, v in attrs.items() if v is not None}, start_time=start_ns)
        if span.outcome == "error":
            otel.set_attribute("error.type", (extra or {}).get("error.type") or _error_type(span.error))
            otel.set_status(Status(StatusCode.ERROR, span.error or None))
        elif error is not None:
            otel.set_status(Status(StatusCode.ERROR, str(error)))
        context = trace.set_span_in_context(otel)
        at = start_ns
        for child in span.children:
            length = int(child.latency_s * 1e9)
            child_start = at if span.kind in sequential else start_ns
            child_end = min(end_ns, child_start + length) if length else child_start
            self._emit(child, context, child_start, max(child_start, child_end), kinds, None, None, sequential)
            at = child_end
        otel.end(end_time=end_ns)

    def flush(self, timeout_ms: int = 10_000) -> bool:
        return self.provider.force_flush(timeout_ms)


def _error_type(message: str | None) -> str:
    return (message or "error").split(":", 1)[0][:64]


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    """Span data as attributes: scalars and lists of scalars as they are, mappings flattened."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}", v))
        return out
    if isinstance(value, (str, bool, int, float)):
        return {prefix: value}
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value) and len({type(v) for v in value}) <= 1:
        return {prefix: list(value)}
    import json

    return {prefix: json.dumps(value, default=str)[:4096]}


_MADE: dict[str, Telemetry] = {}
_MADE_LOCK = threading.Lock()


def telemetry_for(config: TelemetryConfig) -> Telemetry:
    """This process's exporter for `config` (one per endpoint and service, shared by its models)."""
    key = config.model_dump_json()
    with _MADE_LOCK:
        found = _MADE.get(key)
        if found is None:
            found = _MADE[key] = Telemetry(config)
        return found


def flush() -> None:
    """Send every span this process still holds (a batch's end, a client's close)."""
    with _MADE_LOCK:
        made = list(_MADE.values())
    for telemetry in made:
        telemetry.flush()


class TracedModel:
    """A provider or route whose outermost calls export their trace; the rest passes through."""

    def __init__(self, name: str, model: Any, telemetry: Telemetry, kinds: Mapping[str, tuple[str, str]],
                 sequential: Collection[str] = ()):
        self.name = name
        self.model = model
        self.telemetry = telemetry
        self.kinds = kinds
        self.sequential = sequential

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.__dict__["model"], attr)

    def __repr__(self) -> str:
        return f"TracedModel({self.model!r})"

    def _failed(self, err: BaseException, request: ChatRequest, started: int) -> None:
        span = getattr(err, "span", None) or Span(name=self.name, kind="provider" if self.name in self.kinds else "route",
                                                   outcome="error", error=str(err))
        span = span if span.outcome == "error" else Span(name=span.name, kind=span.kind, outcome="error", error=str(err), children=[span])
        self.telemetry.export(span, request, started, time.time_ns(), self.kinds, error=err, sequential=self.sequential)

    async def complete(self, request: ChatRequest) -> Completion:
        if _INSIDE.get():
            return await self.model.complete(request)
        token = _INSIDE.set(True)
        started = time.time_ns()
        try:
            completion = await self.model.complete(request)
        except Exception as err:
            self._failed(err, request, started)
            raise
        finally:
            _INSIDE.reset(token)
        if completion.trace is not None:
            self.telemetry.export(completion.trace, request, started, time.time_ns(), self.kinds, completion,
                                  sequential=self.sequential)
        return completion

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        if _INSIDE.get():
            async for chunk in self.model.stream(request):
                yield chunk
            return
        started = time.time_ns()
        pieces = aiter(self.model.stream(request))
        while True:
            # Set around each step only: a generator's context must not leak into the caller's.
            token = _INSIDE.set(True)
            try:
                chunk = await anext(pieces)
            except StopAsyncIteration:
                return
            except Exception as err:
                self._failed(err, request, started)
                raise
            finally:
                _INSIDE.reset(token)
            if chunk.done and chunk.completion is not None and chunk.completion.trace is not None:
                self.telemetry.export(chunk.completion.trace, request, started, time.time_ns(), self.kinds, chunk.completion,
                                      sequential=self.sequential)
            yield chunk
