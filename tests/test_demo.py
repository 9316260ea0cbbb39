"""The README's main job: python -m asyncclf demo."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asyncclf._cli import main


@pytest.mark.slow  # a subprocess run; test_demo_on_trio runs the demo in the default tier
def test_demo_runs_and_reports() -> None:
    """The demo trains, classifies concurrently and reports a real accuracy."""
    result = subprocess.run(
        [sys.executable, "-m", "asyncclf", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = result.stdout
    assert "SMS Spam Collection: 5574 messages, 747 spam" in out
    accuracy = float(out.split("held-out accuracy: ")[1].split()[0])
    assert accuracy > 0.97
    assert "concurrent classify() calls" in out
    assert "grouped: ham=" in out


def test_demo_on_trio() -> None:
    """The demo runs on trio too."""
    assert main(["--backend", "trio", "demo"]) == 0
