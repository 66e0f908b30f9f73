"""Helpers shared by the host suites (importable; conftest.py is not)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def inventory_name(host) -> str:
    """The inventory hostname of a testinfra host, whatever its backend."""
    backend = host.backend
    target = getattr(backend, "host", None)
    # The ansible backend keeps the inventory name as a string, the SSH backend
    # a host spec whose name is the Host of the ssh_config (lab/vm/up writes
    # one per inventory name); the container backends have neither.
    if isinstance(target, str):
        return target
    return getattr(target, "name", None) or backend.get_hostname()
