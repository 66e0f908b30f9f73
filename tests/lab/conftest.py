"""Fixtures for lab-only tests (they may stop lab services)."""

from __future__ import annotations

import subprocess

import pytest
from labkit import MIRROR, REPO, lab_env, podman


@pytest.fixture
def mirror_stopped():
    """The lab mirror is down for the test and brought back afterwards."""
    podman("stop", "--time", "5", MIRROR)
    try:
        yield MIRROR
    finally:
        subprocess.run([str(REPO / "lab" / "up")], env=lab_env(), check=True, capture_output=True)
