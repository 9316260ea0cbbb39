"""Notebooks run top to bottom in a real Jupyter kernel: docs/quickstart.ipynb,
docs/online.ipynb, and worker processes used cell after cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
NOTEBOOK = DOCS / "quickstart.ipynb"
ONLINE = DOCS / "online.ipynb"

# A Jupyter kernel per notebook: the slow tier.
pytestmark = pytest.mark.slow


def executed(notebook: Any, directory: Path) -> str:
    """Run every cell of ``notebook`` in a python3 kernel; return what the cells printed."""
    nbclient = pytest.importorskip("nbclient")
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(directory)}},
    )
    client.execute()
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_quickstart_notebook_executes(tmp_path: Path) -> None:
    """Every cell runs (top-level await included) and the model scores over 0.97."""
    nbformat = pytest.importorskip("nbformat")
    printed = executed(nbformat.read(NOTEBOOK, as_version=4), tmp_path)
    accuracy = float(printed.split("held-out accuracy: ")[1].split()[0])
    assert accuracy > 0.97
    assert "of 1074 held-out messages look like spam" in printed


def after(printed: str, prefix: str) -> str:
    """Return the rest of the printed line that starts with ``prefix``."""
    (line,) = [line for line in printed.splitlines() if line.startswith(prefix)]
    return line.removeprefix(prefix)


def test_online_notebook_executes(tmp_path: Path) -> None:
    """The online notebook learns from the stream while classify is answered by ever
    newer versions, draws its learning curves, and ends over 0.9 progressive accuracy."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("matplotlib")
    notebook = nbformat.read(ONLINE, as_version=4)
    printed = executed(notebook, tmp_path)
    assert float(after(printed, "progressive accuracy: ")) > 0.9
    assert float(after(printed, "window accuracy: ")) > 0.95
    serving = int(after(printed, "serving version: "))
    versions = [int(v) for v in after(printed, "answered by versions ").split()]
    # Several versions answered, the last one published included, none after a newer one.
    assert len(versions) >= 3
    assert versions[-1] == serving
    assert after(printed, "never an older version after a newer one: ") == "True"
    during = [line for line in printed.splitlines() if "answers came while learning" in line]
    assert len(during) == 1
    assert int(during[0].split()[0]) > 0
    # The learning curves were drawn: the kernel sent a PNG of the figure.
    assert any(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


WORKERS = """
import os
from pathlib import Path

def workers():
    # The kernel's children running anyio's worker process, alive.
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"anyio" in command:
            found.append(int(stat.parent.name))
    return sorted(found)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_worker_processes_serve_cell_after_cell(tmp_path: Path) -> None:
    """In a kernel, the worker process started in one cell serves the next ones (anyio
    ties the shutdown of its pool to the task that first uses it, here a cell's), and
    a class defined in a cell gets an error saying it cannot reach a worker."""
    nbformat = pytest.importorskip("nbformat")
    cells = [
        WORKERS,
        "from asyncclf import AsyncClassifier, ProcessExecutor\n"
        "clf = AsyncClassifier(executor=ProcessExecutor(max_workers=1))",
        "await clf.fit(['win cash now', 'lunch at noon'] * 5, ['spam', 'ham'] * 5)\n"
        "first = workers()",
        "import time\ntime.sleep(0.5)\nprint('alive', workers() == first, len(first))",
        "print('classify', (await clf.classify('cash prize now')).label, workers() == first)",
        "await clf.fit(['cash cash', 'noon lunch'] * 5, ['spam', 'ham'] * 5)\n"
        "print('refit', clf.version, (await clf.predict(['cash', 'lunch'])).tolist())",
        # A class defined in a cell cannot reach a worker process: the error says so.
        "from sklearn.dummy import DummyClassifier\n"
        "class Mine(DummyClassifier):\n"
        "    pass\n"
        "try:\n"
        "    await AsyncClassifier(Mine(), executor=ProcessExecutor(max_workers=1)).fit(\n"
        "        ['a', 'b'], ['x', 'y'])\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, 'notebook cell' in str(exc))",
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    printed = executed(notebook, tmp_path)
    assert printed.splitlines() == [
        "alive True 1",
        "classify spam True",
        "refit 2 ['spam', 'ham']",
        "AsyncClfError True",
    ]
