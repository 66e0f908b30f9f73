"""Write each role's variable table in its README.md from meta/argument_specs.yml.

The argument spec is the source of truth; the table between the markers is
generated (``make role-docs``), the prose around it is written by hand.
``--check`` changes nothing and exits 1 naming each README that is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROLES_DIR = Path(__file__).resolve().parents[1] / "roles"
BEGIN = "<!-- BEGIN VARIABLES: generated from meta/argument_specs.yml -->"
END = "<!-- END VARIABLES -->"


def spec_options(role):
    spec = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"]["main"]["options"]


def flatten(options, prefix=""):
    """Each option and sub-option as ``(dotted name, option)``."""
    for name, option in options.items():
        yield prefix + name, option
        if option.get("options"):
            yield from flatten(option["options"], prefix + name + ".")


def _cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_table(role):
    rows = ["| Variable | Type | Required | Default | Description |", "| --- | --- | --- | --- | --- |"]
    for name, option in flatten(spec_options(role)):
        kind = option.get("type", "str")
        if option.get("elements"):
            kind += f" of {option['elements']}"
        default = ""
        if "default" in option:
            rendered = yaml.safe_dump(option["default"], default_flow_style=True).replace("\n...", "").strip()
            default = f"`{rendered}`"
        description = option.get("description", [])
        description = " ".join(description) if isinstance(description, list) else str(description)
        description = re.sub(r"C\(([^)]*)\)", r"`\1`", description)
        if option.get("choices"):
            description += " Choices: " + ", ".join(f"`{c}`" for c in option["choices"]) + "."
        required = "yes" if option.get("required") else ""
        rows.append(f"| `{name}` | {kind} | {required} | {_cell(default)} | {_cell(description)} |")
    return "\n".join(rows) + "\n"


def rendered_readme(role):
    """The README with its table generated now; ValueError when the markers are missing."""
    readme = (ROLES_DIR / role / "README.md").read_text()
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"roles/{role}/README.md needs the markers {BEGIN} and {END}")
    head, rest = readme.split(BEGIN, 1)
    _old_table, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render_table(role)}{END}{tail}"


def roles():
    return sorted(path.parent.parent.name for path in ROLES_DIR.glob("*/meta/argument_specs.yml"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a README is stale")
    args = parser.parse_args(argv)
    stale = []
    for role in roles():
        path = ROLES_DIR / role / "README.md"
        try:
            expected = rendered_readme(role)
        except (OSError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 1
        if path.read_text() != expected:
            stale.append(str(path.relative_to(ROLES_DIR.parent)))
            if not args.check:
                path.write_text(expected)
    for name in stale:
        print(f"{name}: {'stale (run make role-docs)' if args.check else 'table rewritten'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
