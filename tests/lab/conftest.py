"""Fixtures for lab-only tests (they may stop lab services)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from labkit import MIRROR, podman

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
        # Start the same container again (its registry keeps its images) rather
        # than run lab/up, which would also touch the converged enclave host.
        podman("start", MIRROR)
        for unit in ("apt-cacher-ng", "nginx", "docker-registry"):
            for _attempt in range(60):
                if podman("exec", MIRROR, "systemctl", "is-active", "--quiet", unit, check=False).returncode == 0:
                    break
                time.sleep(1)
            else:
                raise AssertionError(f"{unit} did not come back in {MIRROR}")
