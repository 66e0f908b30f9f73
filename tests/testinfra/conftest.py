"""Shared fixtures for the host suites.

The suites check the live state of a host and run against the lab and against
real servers alike:

    pytest tests/testinfra --hosts=podman://enclave-lab-host          # the lab
    pytest tests/testinfra --hosts=ansible://llm_servers --sudo \
        --ansible-inventory=inventories/site --enclave-inventory=inventories/site

What a host should look like comes from the same inventory that provisioned it
(`--enclave-inventory`), never from constants in the tests.
"""

from __future__ import annotations

import functools
import json
import subprocess

import pytest
from enclave_host import REPO, inventory_name


def pytest_addoption(parser):
    parser.addoption(
        "--enclave-inventory",
        default=str(REPO / "inventories" / "lab"),
        help="inventory that provisioned the hosts under test (default: the lab)",
    )
    parser.addoption(
        "--enclave-accepted-image",
        default="{registry}/enclave/workload:1",
        help="an image in the internal registry that the policy accepts ({registry} is the inventory's registry)",
    )
    parser.addoption(
        "--enclave-unsigned-image",
        default="{registry}/enclave/unsigned-workload:1",
        help="an image in the internal registry without a signature ({registry} as above)",
    )


@functools.cache
def _inventory_host_vars(inventory: str, hostname: str) -> dict:
    out = subprocess.run(
        ["ansible-inventory", "-i", inventory, "--host", hostname],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout
    return json.loads(out)


@pytest.fixture
def enclave_vars(host, request) -> dict:
    """The inventory variables of the host under test."""
    inventory = request.config.getoption("--enclave-inventory")
    return _inventory_host_vars(inventory, inventory_name(host))


@pytest.fixture(autouse=True)
def _serving_only(request):
    """A test marked serving does not apply to a host that does not serve (enclave_serving: false)."""
    if request.node.get_closest_marker("serving") is None:
        return
    if not request.getfixturevalue("enclave_vars").get("enclave_serving", True):
        pytest.skip("enclave_serving is false in the inventory: this host runs no inference service")
