# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The fleet summary: every host's bundle in one view, and the hosts that were not audited.

The fleet passes only when every host was audited, every host's bundle passed,
and every bundle still matches its own SHA256SUMS. A host the audit could not
reach is ``not_audited``: it has no evidence, so it can never count as passed.
"""

from __future__ import annotations

import json
import os

from ansible_collections.enclave.llm.plugins.module_utils.evidence.common import (
    SCHEMA,
    STATUSES,
    dump_json,
    empty_counts,
    sha256_hex,
)
from ansible_collections.enclave.llm.plugins.module_utils.evidence.junit import render_summary_junit
from ansible_collections.enclave.llm.plugins.module_utils.evidence.report_html import render_summary

EVIDENCE_NAME = "evidence.json"
REPORT_NAME = "report.html"
SUMS_NAME = "SHA256SUMS"
SUMMARY_JSON = "summary.json"
SUMMARY_HTML = "summary.html"
SUMMARY_JUNIT = "summary.junit.xml"
FILE_MODE = 0o640


def load_bundle(folder):
    """``(evidence, error)`` of one host's bundle folder."""
    path = os.path.join(folder, EVIDENCE_NAME)
    if not os.path.isdir(folder):
        return None, f"bundle {folder} is not a folder: give the host bundle folders the evidence_bundle module wrote."
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None, (
            f"bundle {folder} has no {EVIDENCE_NAME}: evidence_bundle did not finish for that host; "
            "list the host as unreachable or run its audit again."
        )
    except OSError as exc:
        return None, f"{path} cannot be read ({exc.strerror}): check its owner and mode."
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"{path} is not valid JSON ({exc}): the bundle is damaged; run that host's audit again."
    if not isinstance(data, dict) or not all(key in data for key in ("host", "status", "summary", "controls")):
        return None, f"{path} is not an evidence bundle (host, status, summary and controls are missing)."
    return data, ""


def _parse_sums_line(line):
    """``(digest, name)`` of a sha256sum line, undoing its escaping of odd names."""
    escaped = line.startswith("\\")
    if escaped:
        line = line[1:]
    digest, sep, name = line.partition("  ")
    if not sep:
        digest, sep, name = line.partition(" *")
    if escaped:
        name = name.replace("\\\\", "\0").replace("\\n", "\n").replace("\\r", "\r").replace("\0", "\\")
    return digest.lower(), name


def check_sums(folder):
    """``(digest of SHA256SUMS, problem)``; problem is '' when every listed file matches."""
    path = os.path.join(folder, SUMS_NAME)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError:
        return None, f"{SUMS_NAME} is missing: the bundle cannot be checked"
    bad = []
    for line in raw.decode("utf-8", "surrogateescape").splitlines():
        if not line.strip():
            continue
        digest, name = _parse_sums_line(line)
        try:
            with open(os.path.join(folder, name), "rb") as handle:
                actual = sha256_hex(handle.read())
        except OSError:
            bad.append(f"{name} missing")
            continue
        if actual != digest:
            bad.append(f"{name} changed")
    problem = f"the bundle does not match its {SUMS_NAME} ({', '.join(bad)})" if bad else ""
    return sha256_hex(raw), problem


def build_summary(bundles, unreachable, dest, generated_at=""):
    """``(summary, evidences, links, error)`` from ``[(folder, evidence)]`` and the unreachable hosts."""
    hosts, evidences, links = {}, {}, {}
    for folder, evidence in bundles:
        host = str(evidence["host"])
        if host in hosts:
            return (
                None,
                None,
                None,
                (
                    f"two bundles are for host {host} ({hosts[host]['bundle']} and {folder}): "
                    "give each host's bundle once."
                ),
            )
        digest, integrity_problem = check_sums(folder)
        failed = list(evidence.get("failed_controls") or [])
        status = evidence["status"] if evidence["status"] in ("passed", "failed") else "failed"
        hosts[host] = {
            "status": "failed" if integrity_problem else status,
            "summary": {key: evidence["summary"].get(key, 0) for key in (*STATUSES, "total")},
            "failed_controls": failed,
            "not_verified_controls": list(evidence.get("not_verified_controls") or []),
            "waived_controls": list(evidence.get("waived_controls") or []),
            "problems": list(evidence.get("problems") or []),
            "audited_at": evidence.get("audited_at"),
            "collection_version": evidence.get("collection_version"),
            "git_commit": evidence.get("git_commit"),
            "bundle": os.path.abspath(folder),
            "bundle_digest": digest,
            "integrity_problem": integrity_problem,
        }
        evidences[host] = evidence
        report = os.path.join(folder, REPORT_NAME)
        links[host] = os.path.relpath(report, dest) if os.path.isfile(report) else None
        hosts[host]["report"] = links[host]
    both = sorted(set(unreachable) & set(hosts))
    if both:
        return (
            None,
            None,
            None,
            (f"{', '.join(both)} is listed as unreachable and also has a bundle: a host is either audited or not."),
        )
    not_audited = sorted(set(unreachable))
    totals = empty_counts()
    for entry in hosts.values():
        for status in STATUSES:
            totals[status] += entry["summary"].get(status, 0)
    problems = []
    if not hosts and not not_audited:
        problems.append("no host was audited: an empty audit proves nothing")
    passed = bool(hosts) and not not_audited and all(e["status"] == "passed" for e in hosts.values())
    summary = {
        "schema": SCHEMA,
        "status": "passed" if passed and not problems else "failed",
        "generated_at": generated_at,
        "hosts": hosts,
        "not_audited": not_audited,
        "totals": {**totals, "total": sum(totals.values())},
        "problems": problems,
    }
    return summary, evidences, links, ""


def render_files(summary, evidences, links):
    return {
        SUMMARY_JSON: dump_json(summary),
        SUMMARY_HTML: render_summary(summary, links).encode("utf-8"),
        SUMMARY_JUNIT: render_summary_junit(summary, evidences),
    }
