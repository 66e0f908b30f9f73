"""Fixtures for lab-only tests (they may stop lab services)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from labkit import MIRROR, REPO, lab_env, podman

# The lab tests share the integration suite's helpers for the lab host
# (lab_host.py, netns.py) instead of keeping copies.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))


@pytest.fixture
def mirror_stopped():
    """The lab mirror is down for the test and brought back afterwards."""
    podman("stop", "--time", "5", MIRROR)
    try:
        yield MIRROR
    finally:
        subprocess.run([str(REPO / "lab" / "up")], env=lab_env(), check=True, capture_output=True)
