"""Helpers shared by the host suites (importable; conftest.py is not)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def inventory_name(host) -> str:
    """The inventory hostname of a testinfra host, whatever its backend."""
    backend = host.backend
    return getattr(backend, "host", None) or backend.get_hostname()
