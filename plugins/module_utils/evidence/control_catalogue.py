# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The control catalogue (docs/controls.yml): load it, check its shape, render docs/controls.md.

The catalogue is the single source of every control: its ID, rationale,
references, implementing role and tag, and the host tests that verify it.
The human document is generated from it, so the two cannot drift::

    PYTHONPATH=.collections python -m \\
        ansible_collections.enclave.llm.plugins.module_utils.evidence.control_catalogue \\
        docs/controls.yml > docs/controls.md

``make controls-doc`` runs exactly that. Everything here is pure but ``load``
(which reads the file) and ``main``.
"""

from __future__ import annotations

import re
import sys

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    HAS_YAML = False

SCHEMA = 1
FIELDS = ("id", "title", "rationale", "mappings", "role", "tag", "tests")
MAPPINGS = ("cis_debian12_l1", "bsi", "gdpr")
ID = re.compile(r"^ENC-([A-Z]{2})-(\d{3})$")
# What a well-formed reference of each kind looks like: a CIS recommendation
# number, an IT-Grundschutz module or requirement, a GDPR article.
REFERENCE = {
    "cis_debian12_l1": re.compile(r"^\d+(\.\d+)+$"),
    "bsi": re.compile(r"^[A-Z]{3,4}(\.\d+)+(\.A\d+)?$"),
    "gdpr": re.compile(r"^Art\. \d+(\(\d+\)(\([a-z]\))?)?$"),
}
TEST_REFERENCE = re.compile(r"^tests/[\w/.-]+\.py::[A-Za-z_]\w*$")
FAMILIES = {
    "OS": "Host hardening",
    "AU": "Audit trail",
    "FW": "Firewall",
    "MN": "Isolation monitor",
    "MS": "Model store",
    "VL": "Inference service (vLLM)",
    "IG": "Ingress",
    "PD": "Rootless Podman",
    "MR": "Offline mirrors",
}
REGENERATE = (
    "PYTHONPATH=.collections python -m ansible_collections.enclave.llm.plugins.module_utils.evidence.control_catalogue "
    "docs/controls.yml > docs/controls.md"
)
NONE = "—"


def _say(text="", stream=None):
    """One line of the command-line program this module also is."""
    stream = stream or sys.stdout
    stream.write(f"{text}\n")
    stream.flush()


def load(path):
    """The parsed catalogue; ValueError saying what is wrong when it is not YAML holding a mapping."""
    if not HAS_YAML:
        raise RuntimeError("PyYAML is needed to read the control catalogue")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds no mapping: the catalogue is schema, description and controls")
    return data


def family_of(control_id):
    """``FW`` for ``ENC-FW-003``; None for an ID that is not well formed."""
    match = ID.match(str(control_id))
    return match.group(1) if match else None


def _text_problems(where, control, key):
    value = control.get(key)
    if not isinstance(value, str) or not value.strip():
        return [f"{where}: {key} must be non-empty text"]
    return []


def _mapping_problems(where, mappings):
    if not isinstance(mappings, dict):
        return [f"{where}: mappings must be a mapping of {', '.join(MAPPINGS)}"]
    problems = []
    missing = [key for key in MAPPINGS if key not in mappings]
    unknown = sorted(str(key) for key in mappings if key not in MAPPINGS)
    if missing:
        problems.append(f"{where}: mappings lack {', '.join(missing)} (an empty list where none applies)")
    if unknown:
        problems.append(f"{where}: unknown mappings {', '.join(unknown)}; use {', '.join(MAPPINGS)}")
    for key in MAPPINGS:
        references = mappings.get(key)
        if key not in mappings:
            continue
        if not isinstance(references, list):
            problems.append(f"{where}: mappings.{key} must be a list")
            continue
        for reference in references:
            if not isinstance(reference, str):
                # YAML reads 1.10 as the number 1.1: the reference must be quoted.
                problems.append(f"{where}: mappings.{key} entry {reference!r} is not text; quote it")
            elif not REFERENCE[key].match(reference):
                problems.append(f"{where}: mappings.{key} entry {reference!r} is not a {key} reference")
        if len(set(map(str, references))) != len(references):
            problems.append(f"{where}: mappings.{key} lists a reference twice")
    return problems


def _tests_problems(where, tests):
    if not isinstance(tests, list) or not tests:
        return [f"{where}: tests must list at least one test (path::function)"]
    problems = [
        f"{where}: test {test!r} is not tests/<path>.py::<function>"
        for test in tests
        if not isinstance(test, str) or not TEST_REFERENCE.match(test)
    ]
    if len(set(map(str, tests))) != len(tests):
        problems.append(f"{where}: a test is listed twice")
    return problems


def _control_problems(index, control):
    if not isinstance(control, dict):
        return [f"controls[{index}] is not a mapping"]
    where = str(control.get("id") or f"controls[{index}]")
    problems = []
    missing = [key for key in FIELDS if key not in control]
    unknown = sorted(str(key) for key in control if key not in FIELDS)
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")
    if unknown:
        problems.append(f"{where}: unknown keys {', '.join(unknown)}; a control has {', '.join(FIELDS)}")
    if "id" in control and not ID.match(str(control["id"])):
        problems.append(f"{where}: id must be ENC-<two capitals>-<three digits>, e.g. ENC-FW-001")
    for key in ("title", "rationale", "role"):
        if key in control:
            problems += _text_problems(where, control, key)
    tag = control.get("tag")
    if "tag" in control and tag is not None and (not isinstance(tag, str) or not tag.strip()):
        problems.append(f"{where}: tag must be the tag its tasks carry, or null where they carry none")
    if "mappings" in control:
        problems += _mapping_problems(where, control["mappings"])
    if "tests" in control:
        problems += _tests_problems(where, control["tests"])
    return problems


def validate(catalogue):
    """Every problem with the catalogue's shape, one message each; empty when it is well formed."""
    if not isinstance(catalogue, dict):
        return ["the catalogue must be a mapping with schema, description and controls"]
    problems = []
    if catalogue.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA}, not {catalogue.get('schema')!r}")
    controls = catalogue.get("controls")
    if not isinstance(controls, list) or not controls:
        return [*problems, "controls must be a non-empty list"]
    seen = set()
    for index, control in enumerate(controls):
        problems += _control_problems(index, control)
        control_id = control.get("id") if isinstance(control, dict) else None
        if control_id in seen:
            problems.append(f"{control_id}: listed twice")
        seen.add(control_id)
    return problems


def _text(value):
    """Prose on one line; ``<name>`` stays text rather than an HTML tag."""
    return " ".join(str(value).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(value):
    """Text for one cell of a Markdown table."""
    return _text(value).replace("|", "\\|")


def _references(values):
    return ", ".join(_cell(value) for value in values) if values else NONE


def _code(value):
    return f"`{_cell(value)}`" if value else NONE


def _families(controls):
    """``[(family, [control, ...])]`` in the order the catalogue first names each family."""
    grouped = {}
    for control in controls:
        grouped.setdefault(family_of(control["id"]), []).append(control)
    return list(grouped.items())


def _family_title(family):
    return f"{FAMILIES.get(family, 'Controls')} (ENC-{family})"


def _anchor(text):
    """The anchor GitHub and most renderers give a heading."""
    return re.sub(r"[^a-z0-9 -]", "", text.lower()).replace(" ", "-")


def render_markdown(catalogue):
    """docs/controls.md for a catalogue that ``validate`` accepts."""
    controls = catalogue["controls"]
    families = _families(controls)
    lines = [
        "# Control catalogue",
        "",
        "<!-- Generated from docs/controls.yml by plugins/module_utils/evidence/control_catalogue.py: do not edit. -->",
        "",
        "This document is generated from [`controls.yml`](controls.yml), the single source of the",
        "enclave's controls. Change the catalogue, never this file, then regenerate it with",
        "`make controls-doc`, which runs:",
        "",
        f"    {REGENERATE}",
        "",
        "`tests/unit/test_controls_catalogue.py` fails while this file differs from the catalogue.",
        "",
        "Every control has an ID `ENC-<family>-<nnn>`. Each task that implements it starts its name",
        "with the ID, so a line of a run leads to its control; `ansible-playbook --tags TAG` runs the",
        f"control's tasks alone (a tag of {NONE} means the role's tasks carry no tag: run its playbook).",
        "The tests listed under each control check the live host (tests/testinfra); the compliance",
        "audit (`playbooks/audit.yml`) runs those not marked `mutates_host`, and every control has at",
        "least one such test.",
        "",
        "References: **CIS** is the CIS Debian Linux 12 Benchmark v1.1.0, Level 1 (Server); **BSI** the",
        "IT-Grundschutz-Kompendium (a module ID where no single requirement fits); **GDPR** the General",
        f"Data Protection Regulation. {NONE} means none applies.",
        "",
        f"{len(controls)} controls in {len(families)} families:",
        "",
    ]
    for family, members in families:
        title = _family_title(family)
        lines.append(f"- [{title}](#{_anchor(title)}): {len(members)}")
    for family, members in families:
        lines += [
            "",
            f"## {_family_title(family)}",
            "",
            "| ID | Title | Role | Tag | CIS | BSI | GDPR |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for control in members:
            mappings = control["mappings"]
            lines.append(
                f"| [{control['id']}](#{control['id'].lower()}) | {_cell(control['title'])} "
                f"| {_code(control['role'])} | {_code(control['tag'])} "
                f"| {_references(mappings['cis_debian12_l1'])} | {_references(mappings['bsi'])} "
                f"| {_references(mappings['gdpr'])} |"
            )
        for control in members:
            lines += [
                "",
                f"### {control['id']}",
                "",
                f"**{_text(control['title'])}**",
                "",
                _text(control["rationale"]),
                "",
                "Verified by:",
                "",
            ]
            lines += [f"- `{test}`" for test in control["tests"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Print docs/controls.md for the catalogue named on the command line; 1 with the problems when it is malformed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        _say("usage: control_catalogue CATALOGUE (docs/controls.yml) > docs/controls.md", stream=sys.stderr)
        return 2
    try:
        catalogue = load(args[0])
    except (OSError, ValueError, RuntimeError) as exc:
        _say(exc, stream=sys.stderr)
        return 1
    problems = validate(catalogue)
    if problems:
        _say(f"{args[0]} is not a valid control catalogue:", stream=sys.stderr)
        for problem in problems:
            _say(f"- {problem}", stream=sys.stderr)
        return 1
    sys.stdout.write(render_markdown(catalogue))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
