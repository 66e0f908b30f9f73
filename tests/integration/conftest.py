"""Fixtures for the integration suite: a throwaway enclave host on the lab network.

The suite never touches the lab's own enclave host (other suites recreate it):
it starts its own containers from the lab's host image (``enclave-test-preflight``
at 198.51.100.30 here; the firewall tests start theirs with :func:`lab_target`)
and removes them by name at the end. The lab network and
mirror come from ``lab/up``, which is run first when they are missing.
Needs root and podman, like the lab itself; skipped otherwise.
"""

from __future__ import annotations

import pytest
from lab_host import lab_target

TARGET_NAME = "enclave-test-preflight"
TARGET_ADDR = "198.51.100.30"
TARGET_LABEL = "io.enclave.test=preflight"


@pytest.fixture(scope="session")
def target(tmp_path_factory):
    with lab_target(tmp_path_factory, TARGET_NAME, TARGET_ADDR, TARGET_LABEL) as host:
        yield host
