"""orchestray: an actor-model runtime for coordinating many LLMs on Ray.

    import orchestray

    async with orchestray.AsyncClient(config="my.yaml") as client:
        answer = await client.complete("cheap", "What is 17 * 3?")

Everything named here is public; every other module is private unless its docs say otherwise
(`orchestray.testing`, `orchestray.data`).
"""

from orchestray._client import AsyncClient, Client
from orchestray._runtime import LocalRuntime, RayRuntime
from orchestray.batch import OutputRecord
from orchestray.config import Config, load_config
from orchestray.errors import (
    AllFailedError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigError,
    OrchestrayError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    RequestError,
    RequestTooLargeError,
    UnknownModelError,
)
from orchestray.messages import ChatRequest, Choice, Chunk, Completion, ImagePart, Message, Span, TextPart, Tool, ToolCall
from orchestray.events import EventBus
from orchestray.workflow import Workflow, WorkflowResult

__all__ = [
    # clients and where they run
    "AsyncClient",
    "Client",
    "RayRuntime",
    "LocalRuntime",
    # requests, answers, traces
    "ChatRequest",
    "Message",
    "TextPart",
    "ImagePart",
    "Tool",
    "ToolCall",
    "Completion",
    "Choice",
    "Chunk",
    "Span",
    "OutputRecord",
    "Workflow",
    "WorkflowResult",
    "EventBus",
    # configuration
    "Config",
    "load_config",
    # errors
    "OrchestrayError",
    "ConfigError",
    "RequestError",
    "UnknownModelError",
    "RequestTooLargeError",
    "ProviderError",
    "RateLimitedError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "CircuitOpenError",
    "BadRequestError",
    "AuthenticationError",
    "AllFailedError",
]
