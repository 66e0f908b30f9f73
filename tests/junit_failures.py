"""Name every failed or errored test in the JUnit XML files the stages write.

    python3 tests/junit_failures.py build/junit

CI keeps only the end of its output, and a long molecule log ends with its own
summary, so .ci/run prints this digest last: one line per failed test, with the
first line of its message. Exit status 1 when any test failed, 0 otherwise.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

MESSAGE_WIDTH = 300


def failures(report: Path) -> list[str]:
    """'<file>: <test id>: <first line of the message>' for each failed test case."""
    lines = []
    try:
        root = ET.parse(report).getroot()
    except ET.ParseError as error:
        # A run killed mid-write (a CI time limit) leaves a truncated report.
        return [f"{report.name}: unreadable ({error}); the run that wrote it did not finish"]
    for case in root.iter("testcase"):
        for outcome in ("failure", "error"):
            element = case.find(outcome)
            if element is None:
                continue
            text = element.get("message") or element.text or ""
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
            lines.append(f"{report.name}: {test_id} [{outcome}] {first[:MESSAGE_WIDTH]}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    reports = sorted(Path(argv[0]).glob("*.xml"))
    found = [line for report in reports for line in failures(report)]
    names = ", ".join(report.name for report in reports) or "none"
    print(f"JUnit reports read: {names}")
    print("\n".join(found) if found else "no failed tests in them")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
