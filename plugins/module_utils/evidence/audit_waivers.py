# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Waivers: a signed-off, dated exception that lets a control not be met for a while.

The format is described in docs/waivers.md. A waiver names one control, why it
is waived, who approved it, the last day it holds (``expires``, inclusive), and
optionally the inventory hosts it covers. Every problem in the file is reported
at once, before anything is written, so an operator fixes the file in one pass.
"""

from __future__ import annotations

import datetime
import re

SCHEMA = 1
REQUIRED_KEYS = ("control", "reason", "approver", "expires")
KNOWN_KEYS = (*REQUIRED_KEYS, "hosts")
TOP_KEYS = ("schema", "waivers")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_date(value):
    """``(date, problem)``: a calendar date from YAML (a date, or YYYY-MM-DD text)."""
    if isinstance(value, datetime.datetime):
        return None, f"{value} has a time of day; give the last day the waiver holds, YYYY-MM-DD"
    if isinstance(value, datetime.date):
        return value, ""
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return datetime.date.fromisoformat(value.strip()), ""
        except ValueError:
            pass
    return None, f"{value!r} is not a date; write it as YYYY-MM-DD (for example 2027-03-31)"


def _text(value):
    return value.strip() if isinstance(value, str) else ""


def _waiver_problems(index, entry, control_ids):
    where = f"waivers[{index}]"
    if not isinstance(entry, dict):
        return [f"{where} is not a mapping: each waiver has control, reason, approver and expires"], None
    problems = []
    control = entry.get("control")
    if control is not None:
        where = f"waivers[{index}] ({control})"
    unknown = sorted(str(key) for key in entry if key not in KNOWN_KEYS)
    if unknown:
        problems.append(
            f"{where} has unknown keys {', '.join(unknown)}: a waiver has only {', '.join(KNOWN_KEYS)} "
            "(a misspelt key would be silently ignored otherwise)"
        )
    if not _text(control):
        problems.append(f"{where} names no control: set control to a control ID of docs/controls.yml")
    elif control not in control_ids:
        problems.append(
            f"{where}: {control!r} is not a control of the catalogue: use an ID from docs/controls.yml "
            "(a waiver for a renamed or removed control must be removed)"
        )
    for key, meaning in (("reason", "why the control cannot be met"), ("approver", "who signed it off, name and role")):
        if not _text(entry.get(key)):
            problems.append(f"{where} has no {key}: say {meaning}")
    expires = None
    if "expires" not in entry or entry["expires"] in (None, ""):
        problems.append(f"{where} has no expires: every waiver ends; give the last day it holds, YYYY-MM-DD")
    else:
        expires, problem = parse_date(entry["expires"])
        if problem:
            problems.append(f"{where} expires: {problem}")
    hosts = entry.get("hosts")
    if hosts is not None and (
        not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h.strip() for h in hosts)
    ):
        problems.append(
            f"{where} hosts: give a non-empty list of inventory hostnames, or leave hosts out to cover every host"
        )
    if problems:
        return problems, None
    return [], {
        "control": control,
        "reason": _text(entry["reason"]),
        "approver": _text(entry["approver"]),
        "expires": expires.isoformat(),
        "hosts": [h.strip() for h in hosts] if hosts is not None else None,
    }


def parse_waivers(data, control_ids):
    """``(waivers, problems)`` for a loaded waivers document; problems say what to fix."""
    if data is None:
        return [], []
    if not isinstance(data, dict):
        return [], ["the file is not a mapping: it starts with schema: 1 and a waivers: list (docs/waivers.md)"]
    problems = []
    unknown = sorted(str(key) for key in data if key not in TOP_KEYS)
    if unknown:
        problems.append(f"unknown top-level keys {', '.join(unknown)}: the file has only schema and waivers")
    if data.get("schema") != SCHEMA:
        problems.append(f"schema is {data.get('schema')!r}: this collection reads schema: {SCHEMA}")
    entries = data.get("waivers")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        problems.append("waivers is not a list: give one list item per waiver")
        entries = []
    waivers = []
    for index, entry in enumerate(entries):
        entry_problems, waiver = _waiver_problems(index, entry, control_ids)
        problems.extend(entry_problems)
        if waiver:
            waivers.append(waiver)
    return (waivers if not problems else []), problems


def covers(waiver, host):
    return waiver["hosts"] is None or host in waiver["hosts"]


def is_active(waiver, today):
    """A waiver holds through its ``expires`` day."""
    return datetime.date.fromisoformat(waiver["expires"]) >= today


def decide(waivers, control_id, host, today):
    """``(state, waiver)`` for a control on a host: ``active``, ``expired`` or ``(None, None)``.

    When several waivers cover it, an active one wins (the one lasting longest);
    an expired waiver counts only when no active one remains, so renewing a
    waiver by adding a new entry works before the old one is removed.
    """
    matching = [w for w in waivers if w["control"] == control_id and covers(w, host)]
    if not matching:
        return None, None
    latest = max(matching, key=lambda w: w["expires"])
    return ("active" if is_active(latest, today) else "expired"), latest
