"""Import the collection's module_utils from this checkout, for the bench scripts.

The repository is the collection; .collections/ansible_collections/enclave/llm
links back to it (`make deps` creates the link; it is created here when missing).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

COLLECTIONS = Path(__file__).resolve().parents[1] / ".collections"


def module_utils(name):
    """The module ``ansible_collections.enclave.llm.plugins.module_utils.NAME``."""
    link = COLLECTIONS / "ansible_collections" / "enclave" / "llm"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("../../..")
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
    return importlib.import_module(f"ansible_collections.enclave.llm.plugins.module_utils.{name}")
