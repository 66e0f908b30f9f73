"""Audit re-run time on the converged lab host: playbooks/audit.yml (the full
control catalogue, evidence bundle included) side by side in one run with a
Lynis audit of the same host, alternating so that load affects both alike.

    .venv/bin/python bench/audit_rerun.py [--repeat 3] [--json out.json]

Needs the converged lab (make lab). Lynis is unpacked from the Debian package
onto the host for each run and removed again, as in bench/lynis_index.py.
Reports the median and the spread of each, the number of controls and of
commands the audit ran, and the ratio. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from lynis_index import lynis_archive, playbook, run_lynis  # noqa: E402

LAB_HOST = ["enclave-admin@198.51.100.20"]


def audit_once(dest: Path, control_dir: Path) -> dict:
    seconds, _recap = playbook(
        REPO / "inventories" / "lab", "audit.yml", "-e", f"enclave_audit_dest={dest}", control_dir=control_dir
    )
    evidence = json.loads(next(dest.glob("*/enclave-lab-host/evidence.json")).read_text())
    controls = evidence["controls"]
    return {
        "seconds": seconds,
        "controls": len(controls),
        "tests": sum(len(c["tests"]) for c in controls),
        "commands": sum(len(t["commands"]) for c in controls for t in c["tests"]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lynis-deb", type=Path, help="lynis .deb (default: apt-get download lynis)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as tmpdir:
        tmp = Path(tmpdir)
        archive = lynis_archive(tmp, args.lynis_deb)
        control_dir = tmp / "cp"
        control_dir.mkdir()
        audits, lynis = [], []
        for round_ in range(args.repeat):
            audits.append(audit_once(tmp / f"audit-{round_}", control_dir))
            lynis.append(run_lynis(LAB_HOST, archive))

    audit_s = [a["seconds"] for a in audits]
    lynis_s = [r["seconds"] for r in lynis]
    figures = {
        "repeat": args.repeat,
        "audit_seconds": [round(s, 1) for s in audit_s],
        "lynis_seconds": lynis_s,
        "audit_median_s": round(statistics.median(audit_s), 1),
        "lynis_median_s": round(statistics.median(lynis_s), 1),
        "audit_to_lynis": round(statistics.median(audit_s) / statistics.median(lynis_s), 2),
        "controls": audits[-1]["controls"],
        "tests": audits[-1]["tests"],
        "commands": audits[-1]["commands"],
        "lynis_index": lynis[-1]["index"],
    }
    print("| run | median | all runs | covers |")
    print("| --- | ---: | --- | --- |")
    print(
        f"| playbooks/audit.yml | {figures['audit_median_s']} s | {figures['audit_seconds']} | "
        f"{figures['controls']} controls, {figures['tests']} test results, {figures['commands']} commands, "
        "evidence bundle |"
    )
    print(
        f"| Lynis --quick | {figures['lynis_median_s']} s | {figures['lynis_seconds']} | "
        f"hardening index {figures['lynis_index']} |"
    )
    print(f"\naudit / Lynis: {figures['audit_to_lynis']}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
