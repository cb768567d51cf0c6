"""A document-analysis workflow on the embedded default config: extract, then classify and find entities at once, then summarize and validate.

    python examples/document_workflow.py [--fast]

Runs in-process on the default config's simulated models (no API key, no Ray): each provider is
an `orchestray.provider.Provider` with its simulated backend, and routes (here the `vote`
ensemble) are coordinators over them, so a step can name a provider or a route as its model.
`--fast` drops the simulated latencies (as the test that runs this example in CI does).
"""

from __future__ import annotations

import argparse
import asyncio
import re
from dataclasses import replace

from orchestray.backends import make_backend
from orchestray.config import default_config
from orchestray.coordinators import build_coordinator
from orchestray.provider import Provider
from orchestray.workflow import Workflow, WorkflowContext

DOCUMENT = """\
INVOICE no. 2026-117 from Acme Tools Ltd to Northwind Traders, 2 December 2026.
12 boxes of bolts at 120.00 each: 1,440.00. Payment of this invoice is due within 30 days
to account DE44 5001 0517 5407 3249 31. Questions: billing@acme.example.
"""
LABELS = ["invoice", "contract", "spam"]


def models(fast: bool = False) -> dict:
    """Every provider and route of the embedded default config, by name, in this process."""
    config = default_config()
    table: dict = {}
    for provider in config.providers:
        if fast and provider.simulated is not None:
            provider = provider.model_copy(update={"simulated": provider.simulated.model_copy(update={"latency_ms": 0})})
        table[provider.name] = Provider(provider, make_backend(provider, None))
    for name in config.routes:
        table[name] = build_coordinator(name, config, table.__getitem__)
    return table


def find_entities(text: str) -> dict:
    """Organisations, dates, amounts and e-mail addresses, by pattern (a Python step)."""
    return {
        "organisations": re.findall(r"\b[A-Z][a-z]+ (?:[A-Z][a-z]+ )?(?:Ltd|Traders|Inc|GmbH)\b", text),
        "dates": re.findall(r"\b\d{1,2} [A-Z][a-z]+ \d{4}\b", text),
        "amounts": re.findall(r"\b\d{1,3}(?:,\d{3})*\.\d{2}\b", text),
        "emails": re.findall(r"[\w.]+@[\w.]+\w", text),
    }


def validate(summary: str, entities: dict, ctx: WorkflowContext) -> dict:
    """The checks a reviewer would make before filing the document."""
    problems = [kind for kind in ("organisations", "amounts") if not entities[kind]]
    if not summary.strip():
        problems.append("empty summary")
    ctx.shared.write("filed_as", ctx["classify"], step="validate")
    return {"ok": not problems, "problems": problems, "label": ctx["classify"]}


def document_workflow() -> Workflow:
    wf = Workflow("document_analysis")
    wf.step("extract", fn=lambda document: " ".join(document.split()))  # the text layer of the upload
    wf.step("classify", model="vote", parse="choice", choices=LABELS,
            prompt="{extract}\n\nClassify this document as one of: " + ", ".join(LABELS) + ".")
    wf.step("entities", fn=find_entities, inputs={"text": "extract"})
    wf.step("summary", model="sim-large", prompt="Summarize for the accounts team in two sentences:\n{extract}",
            when=lambda ctx: ctx["classify"] != "spam", retries=2, timeout_s=30)
    wf.step("validate", fn=validate, inputs={"summary": "summary", "entities": "entities"})
    return wf


async def main(fast: bool = False) -> dict:
    table = models(fast)
    wf = document_workflow()
    print("levels:", wf.build())
    result = await wf.run(DOCUMENT, table, on_start=lambda name: print(f"  start {name}"))
    for name, step in result.steps.items():
        shown = step.output if not isinstance(step.output, str) else step.output[:70]
        print(f"{name:<9} {step.status:<9} {step.duration_s * 1000:7.1f} ms  {shown!r}" + (f"  {step.error}" if step.error else ""))
    print("status:", result.status)
    return {"status": result.status, "steps": result.steps, "order": result.order}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="no simulated latency")
    asyncio.run(main(parser.parse_args().fast))
