# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""JUnit XML of the audit, for CI and test dashboards: one test case per control.

The layout is the one the common readers agree on (Jenkins, GitLab, Azure
DevOps, the Ant schema): ``testsuites > testsuite > testcase`` with at most one
of ``failure``, ``error`` or ``skipped`` per case, counts on every suite, and a
``timestamp`` without a time zone. A failed control is a ``failure``; a control
nothing verified is an ``error`` (the check could not be made); a waived or
not applicable control is ``skipped`` with the reason, so a dashboard never
shows either as a green pass.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.enclave.llm.plugins.module_utils.evidence.common import (
    MAPPING_LABELS,
    STATUS_LABELS,
    parse_iso,
    printable,
)

# Characters XML 1.0 cannot hold even escaped, beyond what printable() removes.
_XML_FORBIDDEN = {0xFFFE: "\\ufffe", 0xFFFF: "\\uffff"}
SYSTEM_OUT_LIMIT = 20000


def xml_text(value):
    return printable(value).translate(_XML_FORBIDDEN)


def _timestamp(value):
    moment = parse_iso(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") if moment else None


def _set(element, **attributes):
    for key, value in attributes.items():
        if value is not None:
            element.set(key, xml_text(value))
    return element


def _control_seconds(control):
    return sum(float(test.get("duration_s") or 0) for test in control.get("tests", []))


def _control_details(control):
    """The plain-text evidence of a control for ``system-out``."""
    lines = [f"{control['id']}: {control['title']}", f"status: {STATUS_LABELS.get(control['status'])}"]
    for key, label in MAPPING_LABELS:
        values = control.get("mappings", {}).get(key) or []
        if values:
            lines.append(f"{label}: {', '.join(values)}")
    lines.append(f"role: {control.get('role')}  tag: {control.get('tag')}")
    lines.append(f"result: {control.get('message')}")
    for test in control.get("tests", []):
        lines.append(f"- {test['nodeid']}: {test['outcome']}")
        for command in test.get("commands", []):
            lines.append(f"    $ {command.get('command')}  (rc {command.get('rc')})")
    text = "\n".join(lines)
    return text if len(text) <= SYSTEM_OUT_LIMIT else text[:SYSTEM_OUT_LIMIT] + "\n... (see evidence.json)"


def _add_case(suite, classname, control, counts):
    case = _set(
        ET.SubElement(suite, "testcase"),
        classname=classname,
        name=f"{control['id']} {control['title']}",
        time=f"{_control_seconds(control):.3f}",
    )
    status = control["status"]
    message = control.get("message") or STATUS_LABELS[status]
    if status == "failed":
        _set(ET.SubElement(case, "failure"), message=message, type="failed").text = xml_text(message)
        counts["failures"] += 1
    elif status == "not_verified":
        _set(ET.SubElement(case, "error"), message=message, type="not_verified").text = xml_text(message)
        counts["errors"] += 1
    elif status in ("waived", "not_applicable"):
        _set(ET.SubElement(case, "skipped"), message=f"{STATUS_LABELS[status]}: {message}")
        counts["skipped"] += 1
    ET.SubElement(case, "system-out").text = xml_text(_control_details(control))
    counts["tests"] += 1
    counts["time"] += _control_seconds(control)


def _add_suite(root, name, controls, classname_prefix="", properties=None, timestamp=None):
    suite = _set(ET.SubElement(root, "testsuite"), name=name, hostname=name, timestamp=_timestamp(timestamp))
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            _set(ET.SubElement(props, "property"), name=key, value=value if value is not None else "")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for control in controls:
        _add_case(suite, f"{classname_prefix}{control['family']}", control, counts)
    _finish_suite(suite, counts)
    return counts


def _finish_suite(suite, counts):
    for key in ("tests", "failures", "errors", "skipped"):
        suite.set(key, str(counts[key]))
    suite.set("time", f"{counts['time']:.3f}")


def _finish(root, totals):
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    root.set("time", f"{totals['time']:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _add(totals, counts):
    for key in totals:
        totals[key] += counts[key]


def render_bundle_junit(evidence):
    """JUnit XML bytes for one host's evidence."""
    root = _set(ET.Element("testsuites"), name=f"enclave audit {evidence['host']}")
    counts = _add_suite(
        root,
        evidence["host"],
        evidence["controls"],
        properties={
            "status": evidence["status"],
            "audited_at": evidence.get("audited_at"),
            "collection_version": evidence.get("collection_version"),
            "git_commit": evidence.get("git_commit"),
        },
        timestamp=evidence.get("audited_at"),
    )
    return _finish(root, counts)


def render_summary_junit(summary, evidences):
    """JUnit XML bytes for the fleet: a suite per host; an unreachable host is a suite with one error."""
    root = _set(ET.Element("testsuites"), name="enclave audit fleet")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for host in sorted(summary["hosts"]):
        entry = summary["hosts"][host]
        evidence = evidences[host]
        counts = _add_suite(
            root,
            host,
            evidence["controls"],
            classname_prefix=f"{host}.",
            properties={"status": entry["status"], "bundle_digest": entry.get("bundle_digest")},
            timestamp=evidence.get("audited_at"),
        )
        if entry.get("integrity_problem"):
            suite = root[-1]
            case = _set(ET.SubElement(suite, "testcase"), classname=f"{host}.bundle", name="bundle integrity", time="0")
            _set(ET.SubElement(case, "failure"), message=entry["integrity_problem"], type="tampered")
            counts["tests"] += 1
            counts["failures"] += 1
            _finish_suite(suite, counts)
        _add(totals, counts)
    for host in summary["not_audited"]:
        suite = _set(ET.SubElement(root, "testsuite"), name=host, hostname=host)
        case = _set(ET.SubElement(suite, "testcase"), classname=f"{host}.audit", name="host audited", time="0")
        message = "the audit could not reach this host: nothing was verified (not audited)"
        _set(ET.SubElement(case, "error"), message=message, type="not_audited").text = message
        counts = {"tests": 1, "failures": 0, "errors": 1, "skipped": 0, "time": 0.0}
        _finish_suite(suite, counts)
        _add(totals, counts)
    return _finish(root, totals)
