"""Shared test helpers: the fake clock of orchestray.testing, whose sleep moves time instead of
waiting, and OpenAI's schemas."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from orchestray.testing import FakeClock


@pytest.fixture(scope="module", autouse=True)
def collect_what_the_module_left():
    """A client left unclosed is found when the garbage collector reaches it, which may be many
    tests later; its ResourceWarning (an error here) then fails whichever test runs. Collecting at
    each module's end fails the module that leaked instead."""
    yield
    gc.collect()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# OpenAI's published schemas for chat completions, chunks, model lists and errors: a copy of
# ../shared/openai/openai-schemas.json (openai/openai-openapi at f85dbe2), kept here so the
# tests need nothing outside the repository.
OPENAI_SCHEMAS = Path(__file__).parent / "openai" / "openai-schemas.json"


class OpenAISchemas:
    def __init__(self, path: Path = OPENAI_SCHEMAS):
        self.components = json.loads(path.read_text())["components"]
        self._validators: dict[str, Any] = {}

    def schema(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}", "components": self.components}

    def errors(self, name: str, document: Any) -> list[str]:
        """Every way `document` breaks the named schema, as `path: message` lines."""
        from jsonschema import Draft202012Validator

        validator = self._validators.get(name)
        if validator is None:
            validator = self._validators[name] = Draft202012Validator(self.schema(name))
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]

    def check(self, name: str, document: Any) -> None:
        problems = self.errors(name, document)
        assert not problems, f"not a valid {name}: " + "; ".join(problems[:5]) + f"\n{json.dumps(document)[:2000]}"


@pytest.fixture(scope="session")
def openai_schemas() -> OpenAISchemas:
    return OpenAISchemas()
