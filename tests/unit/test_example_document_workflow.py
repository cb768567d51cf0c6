"""The document-analysis example runs on the embedded default config, in-process, as a user would run it."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "document_workflow.py"


def load():
    spec = importlib.util.spec_from_file_location("document_workflow", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_classifies_and_finds_entities_at_once_then_summarizes_and_validates(capsys):
    example = load()
    outcome = asyncio.run(example.main(fast=True))
    steps = outcome["steps"]
    assert outcome["status"] == "completed" and all(s.status == "completed" for s in steps.values())
    assert outcome["order"][0] == "extract" and set(outcome["order"][1:3]) == {"classify", "entities"}
    assert steps["classify"].output == "invoice" and steps["classify"].trace.kind == "ensemble"
    assert steps["validate"].output == {"ok": True, "problems": [], "label": "invoice"}
    assert "Acme Tools Ltd" in steps["entities"].output["organisations"]
    assert "levels: [['extract'], ['classify', 'entities'], ['summary'], ['validate']]" in capsys.readouterr().out


def test_spam_skips_the_summary_and_what_needs_it():
    example = load()
    spam = "Congratulations, this is not spam: you won! Spam spam. Click to claim the spam prize."
    result = asyncio.run(example.document_workflow().run(spam, example.models(fast=True)))
    assert result.steps["classify"].output == "spam"
    assert result.steps["summary"].status == "skipped" and result.steps["validate"].status == "skipped"
    assert result.steps["entities"].status == "completed"
