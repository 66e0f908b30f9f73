# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""What the evidence bundle, its renderers and the fleet summary share: the control
statuses, time stamps, and making arbitrary host output safe to embed.

Host output is whatever a command printed: control characters, invalid UTF-8
(decoded with surrogate escapes), markup. Every renderer passes text through
:func:`printable` first, so a byte the host printed can neither break the file
format nor vanish silently; it is shown as an escape instead.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re

SCHEMA = 1

# Report order: what needs attention first.
STATUSES = ("failed", "not_verified", "waived", "not_applicable", "passed")
STATUS_LABELS = {
    "failed": "Failed",
    "not_verified": "Not verified",
    "waived": "Waived",
    "not_applicable": "Not applicable",
    "passed": "Passed",
}
# A bundle passes only when none of its controls is in one of these.
BLOCKING_STATUSES = ("failed", "not_verified")

MAPPING_LABELS = (("cis_debian12_l1", "CIS"), ("bsi", "BSI"), ("gdpr", "GDPR"))

# Everything below U+0020 except tab, newline and carriage return, DEL, the C1
# controls, and lone surrogates (undecodable bytes from a surrogateescape decode).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(match):
    code = ord(match.group(0))
    if 0xDC80 <= code <= 0xDCFF:
        # surrogateescape keeps an undecodable byte as U+DC00 + byte: show the byte.
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value):
    """``value`` as text that any renderer can embed: unprintable characters become ``\\xNN``."""
    text = value if isinstance(value, str) else str(value)
    return _UNPRINTABLE.sub(_escape_char, text)


def utc_now():
    return datetime.datetime.now(datetime.UTC)


def iso_utc(moment):
    """``moment`` as ISO 8601 in UTC with a ``Z``, to the second."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text):
    """A timezone-aware datetime from ISO 8601 text (a naive time is taken as UTC); None if unparsable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def dump_json(data):
    """Stable, readable JSON as UTF-8 bytes that never fails on host output.

    A lone surrogate cannot be encoded as UTF-8; ``backslashreplace`` writes it
    as the six characters ``\\udcXX``, which inside a JSON string (where every
    piece of text is) is the JSON escape for that same code point: lossless.
    """
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    return text.encode("utf-8", "backslashreplace")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def empty_counts():
    return dict.fromkeys(STATUSES, 0)


def family_of(control_id):
    """``OS`` for ``ENC-OS-001``: the part between the prefix and the number."""
    parts = str(control_id).split("-")
    return parts[1] if len(parts) == 3 else "other"
