"""Make ``ansible_collections.enclave.llm`` importable from this checkout.

The repository is the collection; .collections/ansible_collections/enclave/llm
links back to it (``make deps`` creates the link; it is created here too when
missing, so ``pytest tests/unit`` works on a fresh clone).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".collections"
LINK = COLLECTIONS / "ansible_collections" / "enclave" / "llm"

if not LINK.exists():
    LINK.parent.mkdir(parents=True, exist_ok=True)
    if LINK.is_symlink():
        LINK.unlink()
    os.symlink("../../..", LINK)

if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
