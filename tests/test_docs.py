"""Every ```python block in the README and docs/ runs, in order, per file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SLOW = {"scaling.md", "estimators.md"}
"""Examples that start worker processes and a cluster, or train a network: the slow tier."""
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize(
    "path",
    [pytest.param(path, marks=[pytest.mark.slow] if path.name in SLOW else []) for path in DOCS],
    ids=lambda p: p.name,
)
def test_code_blocks_run(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The file's Python examples run without error, sharing one namespace."""
    # Run as a script would: examples keep the  if __name__ == "__main__":  guard that
    # worker processes need (docs/scaling.md).
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in BLOCK.findall(path.read_text(encoding="utf-8")):
        exec(compile(block, str(path), "exec"), namespace)


def test_docs_link_to_files_that_exist() -> None:
    """Relative links in the README and docs point at files in the repository."""
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text("utf-8")):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
