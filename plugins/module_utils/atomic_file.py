# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Replace a file in one rename, so a reader sees the old content or the new, never half of it.

Used by the model manifest and fetch code and by the isolation monitor, which
installs this file on the host next to its own modules.
"""

from __future__ import annotations

import os
import tempfile


def write_atomic(path, content, mode=0o644):
    """Replace ``path`` with ``content`` (str as UTF-8, or bytes): temp file in the same folder, fsync, rename."""
    folder = os.path.dirname(path) or "."
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder):
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
