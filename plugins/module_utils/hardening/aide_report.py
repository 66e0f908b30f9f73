# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""AIDE's check report: what it says changed, and an identity for it.

The identity is a digest of the report's findings (summary, entries and their
details) without its timestamps and database digests: two checks of an
unchanged host give the same identity, and one more change gives another. An
operator's acknowledgement names that identity, so it covers exactly the
changes the operator reviewed (enclave.llm.aide_check, ENC-OS-022).
"""

from __future__ import annotations

import hashlib
import re

SECTIONS = {"Added entries:": "added", "Removed entries:": "removed", "Changed entries:": "changed"}
FINDINGS_START = re.compile(r"^AIDE found differences")
FINDINGS_END = "The attributes of the (uncompressed) database(s):"
ENTRY = re.compile(r"^(\S.*?)\s*: (/.*)$")
ACKNOWLEDGEMENT = re.compile(r"^\s*([0-9a-f]{12})\s+(\S.*?)\s*$")
# aide --check exits with a bitmask of added (1), removed (2), changed (4);
# 14 and above is an error of its own.
AIDE_ERROR = 14


def findings(report):
    """The report's lines from "AIDE found differences" to the database section, separators dropped."""
    lines = []
    inside = False
    for line in report.splitlines():
        if FINDINGS_START.match(line):
            inside = True
        elif line.strip() == FINDINGS_END:
            break
        if inside and not set(line.strip()) <= {"-"}:
            lines.append(line.rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return lines


def report_id(report, differs=False):
    """12 hex digits naming these findings; None for a report without differences.

    differs: aide said (by its exit status) that the host differs; a report
    whose findings cannot be told apart then gets the digest of all of it but
    its timestamps, so that it can still be archived and acknowledged."""
    lines = findings(report)
    if not lines and differs:
        lines = [line for line in report.splitlines() if "timestamp" not in line.lower()]
    if not lines:
        return None
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def entries(report):
    """[{"change": added|removed|changed, "path"}] in the report's order."""
    found = []
    section = None
    for line in report.splitlines():
        stripped = line.strip()
        if stripped in SECTIONS:
            section = SECTIONS[stripped]
            continue
        if stripped.endswith(":") and not ENTRY.match(stripped):
            section = None
            continue
        match = ENTRY.match(line)
        if section and match:
            found.append({"change": section, "path": match.group(2)})
    return found


def parse_acknowledgement(text):
    """os_hardening_aide_acknowledge ("<report id> <reason>") -> (id, reason); ("", "") when empty.

    Raises ValueError with what to write instead."""
    if not (text or "").strip():
        return "", ""
    match = ACKNOWLEDGEMENT.match(text)
    if not match:
        raise ValueError(
            f"the acknowledgement {text!r} must be the report's 12-digit id, a space and the reason"
            " (e.g. '3f2a9c0b1d4e model files restored from the mirror, ticket 4711')"
        )
    return match.group(1), match.group(2)
