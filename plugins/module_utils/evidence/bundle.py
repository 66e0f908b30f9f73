# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The evidence bundle of one audited host: from the control catalogue, the host
suites' recorded results (tests/testinfra/audit_evidence.py) and the waivers to
a status per control, and the files an auditor receives.

Loading and checking the inputs, the status rules and building the evidence are
pure functions over plain data; the files are rendered in memory, hashed into
``SHA256SUMS`` and only then written, so a run that fails part-way (a bad input,
a key that cannot sign) leaves the bundle folder as it was.
"""

from __future__ import annotations

import json
import os
import stat

from ansible_collections.enclave.llm.plugins.module_utils.atomic_file import write_atomic
from ansible_collections.enclave.llm.plugins.module_utils.evidence import audit_waivers
from ansible_collections.enclave.llm.plugins.module_utils.evidence.common import (
    BLOCKING_STATUSES,
    SCHEMA,
    dump_json,
    empty_counts,
    family_of,
    sha256_hex,
)
from ansible_collections.enclave.llm.plugins.module_utils.evidence.junit import render_bundle_junit
from ansible_collections.enclave.llm.plugins.module_utils.evidence.report_html import render_report

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    HAS_YAML = False

HOST_SUITES = "tests/testinfra/"
OUTCOMES = ("passed", "failed", "skipped", "error")
EVIDENCE_NAME = "evidence.json"
REPORT_NAME = "report.html"
JUNIT_NAME = "junit.xml"
SUMS_NAME = "SHA256SUMS"
SIGNATURE_NAME = "SHA256SUMS.asc"
RENDERED_NAMES = (EVIDENCE_NAME, REPORT_NAME, JUNIT_NAME)
FILE_MODE = 0o640
# pytest's exit codes that mean the run itself went wrong, not a test.
PYTEST_BROKEN_EXITS = {2: "interrupted", 3: "internal error", 4: "usage error"}
MESSAGE_LINE_LIMIT = 300


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _read(path):
    """``(bytes, problem)``; problem is '' or what is wrong with the path."""
    if not os.path.exists(path):
        return None, "does not exist"
    if not os.path.isfile(path):
        return None, "is not a file"
    try:
        with open(path, "rb") as handle:
            return handle.read(), ""
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"


def _load_yaml(raw):
    """``(data, problem)``."""
    try:
        return yaml.safe_load(raw.decode("utf-8")), ""
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except yaml.YAMLError as exc:
        return None, f"is not valid YAML ({' '.join(str(exc).split())})"


def _string_list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return [str(value)]


def load_catalogue(path):
    """``(catalogue, error)``: ``{"controls": [...], "sha256": ...}`` or a message saying what to fix."""
    raw, problem = _read(path)
    if problem:
        return None, f"catalogue {path} {problem}: give docs/controls.yml of the collection that was applied."
    data, problem = _load_yaml(raw)
    if problem:
        return None, f"catalogue {path} {problem}: fix the file (docs/controls.yml is the control catalogue)."
    if not isinstance(data, dict) or not isinstance(data.get("controls"), list) or not data["controls"]:
        return None, f"catalogue {path} has no controls list: it is not the control catalogue (docs/controls.yml)."
    controls, problems, seen = [], [], set()
    for index, entry in enumerate(data["controls"]):
        if not isinstance(entry, dict) or not entry.get("id") or not entry.get("title"):
            problems.append(f"controls[{index}] has no id or no title")
            continue
        control_id = str(entry["id"])
        if control_id in seen:
            problems.append(f"{control_id} is listed twice")
        seen.add(control_id)
        mappings = entry.get("mappings") if isinstance(entry.get("mappings"), dict) else {}
        controls.append(
            {
                "id": control_id,
                "title": str(entry["title"]),
                "rationale": str(entry.get("rationale") or ""),
                "family": family_of(control_id),
                "role": str(entry.get("role") or ""),
                "tag": str(entry.get("tag") or ""),
                "mappings": {str(key): _string_list(value) for key, value in mappings.items()},
                "tests": _string_list(entry.get("tests")),
            }
        )
    if problems:
        return None, f"catalogue {path} is malformed: {'; '.join(problems[:5])}. Fix docs/controls.yml."
    return {"controls": controls, "sha256": sha256_hex(raw)}, ""


def _results_problems(data):
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("tests"), list):
        return ["it is not the audit_evidence plugin's output (a JSON object with schema 1 and a tests list)"]
    problems = []
    for index, test in enumerate(data["tests"]):
        if not isinstance(test, dict) or not isinstance(test.get("nodeid"), str):
            problems.append(f"tests[{index}] has no nodeid")
        elif test.get("outcome") not in OUTCOMES:
            problems.append(f"tests[{index}] ({test['nodeid']}) has outcome {test.get('outcome')!r}")
        elif not isinstance(test.get("commands", []), list):
            problems.append(f"tests[{index}] ({test['nodeid']}) has commands that are not a list")
    return problems


def load_test_results(path):
    """``(results, error)``: the plugin's JSON, with its SHA-256, or why it cannot be used."""
    raw, problem = _read(path)
    if problem:
        return None, (
            f"test_results {path} {problem}: the test run did not produce evidence. Run the host suites with "
            f"-p audit_evidence --enclave-evidence={path} (tests/testinfra on PYTHONPATH) and read their output "
            "for why pytest stopped before writing it."
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, (
            f"test_results {path} is not valid JSON ({exc}): the test run did not produce usable evidence "
            "(it was cut off, or the file is not the plugin's); run the host suites again."
        )
    problems = _results_problems(data)
    if problems:
        return None, (
            f"test_results {path}: {'; '.join(problems[:5])}. The test run did not produce usable evidence; "
            "run the host suites again with -p audit_evidence."
        )
    return {**data, "sha256": sha256_hex(raw)}, ""


def load_waivers(path, control_ids):
    """``(waivers, sha256, error)``; no path means no waivers."""
    if not path:
        return [], None, ""
    raw, problem = _read(path)
    if problem:
        return None, None, f"waivers {path} {problem}: give the waivers file (docs/waivers.md), or leave waivers out."
    data, problem = _load_yaml(raw)
    if problem:
        return None, None, f"waivers {path} {problem}: fix the file (format in docs/waivers.md)."
    waivers, problems = audit_waivers.parse_waivers(data, set(control_ids))
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        return None, None, f"waivers {path}: {shown}. Nothing was written; fix the file (docs/waivers.md)."
    return waivers, sha256_hex(raw), ""


def facts_problem(facts):
    """'' when every fact can be written as JSON, else which one cannot."""
    for key, value in facts.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return f"facts.{key} cannot be written as JSON ({exc}): give plain data (strings, numbers, lists, dicts)."
    return ""


# ---------------------------------------------------------------------------
# Status rules (pure)
# ---------------------------------------------------------------------------


def reference_of(nodeid):
    """The catalogue reference a result belongs to: its node id without the ``[params]`` suffix."""
    head, sep, last = nodeid.rpartition("::")
    if "[" in last and last.endswith("]"):
        last = last[: last.index("[")]
    return f"{head}{sep}{last}"


def index_results(tests):
    index = {}
    for test in tests:
        index.setdefault(reference_of(test["nodeid"]), []).append(test)
    return index


def _first_line(text):
    line = next((part.strip() for part in str(text or "").splitlines() if part.strip()), "")
    return line if len(line) <= MESSAGE_LINE_LIMIT else line[: MESSAGE_LINE_LIMIT - 3] + "..."


def _failure_line(message):
    """The most telling line of a pytest failure: the ``E   ...`` line, else the last one."""
    lines = [part.strip() for part in str(message or "").splitlines() if part.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    line = errors[0] if errors else (lines[-1] if lines else "")
    return _first_line(line)


def _collection_note(reference, collection_errors):
    path = reference.split("::", 1)[0]
    for error in collection_errors:
        if str(error.get("nodeid", "")).split("::", 1)[0] == path:
            return f" ({path} could not be collected: {_failure_line(error.get('message'))})"
    return ""


def _base_nodeid(nodeid):
    return nodeid.split("[", 1)[0]


def control_result(control, index, collection_errors=(), deselected=frozenset()):
    """The status of one control from its tests' results, before waivers.

    failed: a test failed or errored. not_verified: a host-suite reference has
    no result at all (not collected, or the run stopped), every reference was
    deselected, or the control names no host-suite test; "not run" never reads
    as passed, even when another of its tests passed. A reference deselected on
    purpose (a test that changes the host, left out of a read-only audit) is
    listed as such and counts neither way. passed: a test passed. not_applicable: every
    result skipped (the area is off on this host; the skip reasons are kept).
    """
    references, tests, missing = [], [], []
    for reference in control["tests"]:
        in_audit = reference.startswith(HOST_SUITES)
        results = index.get(reference, []) if in_audit else []
        left_out = in_audit and not results and reference in deselected
        references.append(
            {
                "reference": reference,
                "in_host_audit": in_audit and not left_out,
                "deselected": left_out,
                "results": len(results),
                "outcomes": sorted({r["outcome"] for r in results}),
            }
        )
        if in_audit and not results and not left_out:
            missing.append(reference)
        tests.extend({**result, "reference": reference} for result in results)
    outcomes = [test["outcome"] for test in tests]
    skip_reasons = sorted({test.get("message") or "skipped" for test in tests if test["outcome"] == "skipped"})
    audited = [r for r in references if r["in_host_audit"]]
    if any(outcome in ("failed", "error") for outcome in outcomes):
        failing = [t for t in tests if t["outcome"] in ("failed", "error")]
        message = "; ".join(f"{t['nodeid']} {t['outcome']}: {_failure_line(t.get('message'))}" for t in failing)
        status = "failed"
    elif not audited:
        status = "not_verified"
        message = (
            f"the catalogue names no test under {HOST_SUITES} for this control that the audit ran: "
            "nothing on the host verified it"
        )
    elif missing:
        status = "not_verified"
        message = "; ".join(f"no result for {ref}{_collection_note(ref, collection_errors)}" for ref in missing) + (
            ": the test did not run (deselected, not collected, or the run stopped first). Not run is not passed."
        )
    elif "passed" in outcomes:
        status = "passed"
        skipped = outcomes.count("skipped")
        message = f"{outcomes.count('passed')} test result(s) passed" + (f", {skipped} skipped" if skipped else "")
    else:
        status = "not_applicable"
        message = "every test skipped: " + "; ".join(skip_reasons)
    return {
        "status": status,
        "message": message,
        "references": references,
        "tests": tests,
        "skip_reasons": skip_reasons,
    }


def apply_waiver(result, control_id, host, waivers, today):
    """The control's final status: an active waiver waives it, an expired one fails it."""
    state, waiver = audit_waivers.decide(waivers, control_id, host, today)
    final = {**result, "result_status": result["status"], "waiver": None}
    if state is None:
        return final
    final["waiver"] = {**waiver, "state": state}
    scope = "this host" if waiver["hosts"] else "every host"
    if state == "active":
        final["status"] = "waived"
        final["message"] = (
            f"waived through {waiver['expires']} for {scope}, approved by {waiver['approver']}: {waiver['reason']} "
            f"(the tests' own result: {result['status']}; {result['message']})"
        )
    else:
        final["status"] = "failed"
        final["message"] = (
            f"the waiver expired on {waiver['expires']} (approved by {waiver['approver']}): renew it with a new "
            f"expiry and approval, or remove it and meet the control (the tests' own result: {result['status']}; "
            f"{result['message']})"
        )
    return final


def build_evidence(
    host,
    catalogue,
    results,
    waivers,
    today,
    facts=None,
    audited_at="",
    generated_at="",
    collection_version="",
    git_commit="",
    sources=None,
):
    """Everything the bundle says about ``host``, as one JSON-ready dict."""
    index = index_results(results["tests"])
    collection_errors = results.get("collection_errors") or []
    deselected = {_base_nodeid(nodeid) for nodeid in results.get("deselected") or []}
    controls, referenced = [], set()
    for control in catalogue["controls"]:
        referenced.update(control["tests"])
        result = control_result(control, index, collection_errors, deselected)
        controls.append({**control, **apply_waiver(result, control["id"], host, waivers, today)})
    counts = empty_counts()
    for control in controls:
        counts[control["status"]] += 1
    problems = []
    exit_code = results.get("pytest_exit")
    if exit_code in PYTEST_BROKEN_EXITS:
        problems.append(
            f"the host suites ended with pytest exit code {exit_code} ({PYTEST_BROKEN_EXITS[exit_code]}): "
            "the run did not complete, so the evidence may be incomplete"
        )
    for error in collection_errors:
        problems.append(f"{error.get('nodeid')} could not be collected: {_failure_line(error.get('message'))}")
    blocking = any(counts[status] for status in BLOCKING_STATUSES)
    outcomes = dict.fromkeys(OUTCOMES, 0)
    for test in results["tests"]:
        outcomes[test["outcome"]] += 1
    waivers_applied = [{"control": c["id"], **c["waiver"]} for c in controls if c["waiver"] is not None]
    return {
        "schema": SCHEMA,
        "host": host,
        "status": "failed" if blocking or problems else "passed",
        "audited_at": audited_at,
        "generated_at": generated_at,
        "collection_version": collection_version,
        "git_commit": git_commit,
        "today": today.isoformat(),
        "summary": {**counts, "total": len(controls)},
        "problems": problems,
        "failed_controls": [c["id"] for c in controls if c["status"] == "failed"],
        "not_verified_controls": [c["id"] for c in controls if c["status"] == "not_verified"],
        "waived_controls": [c["id"] for c in controls if c["status"] == "waived"],
        "controls": controls,
        "test_run": {
            "started": results.get("started"),
            "finished": results.get("finished"),
            "pytest_exit": exit_code,
            "tests": len(results["tests"]),
            "outcomes": outcomes,
            "collection_errors": collection_errors,
            "commands_outside_tests": results.get("commands_outside_tests") or [],
        },
        "unreferenced_tests": [t for t in results["tests"] if reference_of(t["nodeid"]) not in referenced],
        "waivers": {
            "applied": waivers_applied,
            "defined": len(waivers),
        },
        "facts": facts or {},
        "sources": sources or {},
    }


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def render_files(evidence):
    """``{name: bytes}`` of the files the bundle renders."""
    return {
        EVIDENCE_NAME: dump_json(evidence),
        REPORT_NAME: render_report(evidence).encode("utf-8"),
        JUNIT_NAME: render_bundle_junit(evidence),
    }


def existing_files(dest):
    """``{name: bytes}`` of the regular files already in ``dest`` that SHA256SUMS covers (tests.json...)."""
    found = {}
    if not os.path.isdir(dest):
        return found
    for name in sorted(os.listdir(dest)):
        if name in (SUMS_NAME, SIGNATURE_NAME) or name.startswith(".tmp-"):
            continue
        path = os.path.join(dest, name)
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as handle:
                found[name] = handle.read()
    return found


def _sums_name(name):
    """GNU sha256sum's escaping of a file name that holds a backslash or newline."""
    if "\\" in name or "\n" in name or "\r" in name:
        return True, name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return False, name


def render_sums(files):
    """``SHA256SUMS`` for ``{name: bytes}``, in the format ``sha256sum -c`` reads."""
    lines = []
    for name in sorted(files):
        escaped, shown = _sums_name(name)
        prefix = "\\" if escaped else ""
        lines.append(f"{prefix}{sha256_hex(files[name])}  {shown}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def write_bundle(dest, files, sums, signature=None):
    """Write the rendered files, then SHA256SUMS, then its signature; each atomically.

    A stale signature from an earlier run would no longer match: it is removed
    when this run signs nothing. Returns the names written.
    """
    os.makedirs(dest, exist_ok=True)
    written = []
    for name in sorted(files):
        write_atomic(os.path.join(dest, name), files[name], mode=FILE_MODE)
        written.append(name)
    write_atomic(os.path.join(dest, SUMS_NAME), sums, mode=FILE_MODE)
    written.append(SUMS_NAME)
    signature_path = os.path.join(dest, SIGNATURE_NAME)
    if signature is not None:
        write_atomic(signature_path, signature, mode=FILE_MODE)
        written.append(SIGNATURE_NAME)
    elif os.path.lexists(signature_path):
        os.unlink(signature_path)
    return written
