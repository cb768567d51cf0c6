"""The Python blocks of README.md's "From Python" section, which the test suite runs."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str = "From Python") -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def needs_ray(block: str) -> bool:
    return "import ray" in block or 'runtime="ray"' in block
