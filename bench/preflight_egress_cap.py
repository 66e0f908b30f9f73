"""How much an oversized egress allowlist costs before the preflight refuses it,
through ansible-playbook as an operator runs it.

    .venv/bin/python bench/preflight_egress_cap.py [--entries 100000] [--repeat 3]

Side by side in one run, alternating: playbooks/preflight.yml on the lab
inventory with ``firewall_egress_extra`` of ``--entries`` entries (over the
cap), and with one bad entry (a catch-all network). Both must be refused
before any host is contacted, each with its own message naming the
variable; the figures are the wall time and the peak memory (max RSS) of
ansible-playbook, and the ratio of the large case to the small one. Nothing
here asserts a time. No host is reached: the refusals come first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRY = {"proto": "tcp", "ports": [443], "owner": "bench", "reason": "size test"}


def entries(count):
    """``count`` distinct destinations in IPv6's documentation range (2001:db8::/32), never contacted."""
    return [{**ENTRY, "destination": f"2001:db8::{n:x}/128"} for n in range(count)]


def refuse_once(extra_vars: Path) -> dict:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    command = [
        "/usr/bin/time",
        "-f",
        "%e %M",
        str(REPO / ".venv" / "bin" / "ansible-playbook"),
        "-i",
        str(REPO / "inventories" / "lab"),
        str(REPO / "playbooks" / "preflight.yml"),
        "-e",
        f"@{extra_vars}",
    ]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    seconds, max_kib = run.stderr.strip().splitlines()[-1].split()
    message = next((line.strip() for line in run.stdout.splitlines() if "firewall_egress_extra" in line), "")
    return {
        "rc": run.returncode,
        "seconds": float(seconds),
        "max_rss_mib": int(max_kib) / 1024,
        "refused": run.returncode != 0 and bool(message),
        "message": message[:300],
        "contacted_host": "Gathering Facts" in run.stdout or "Preflight | FACTS" in run.stdout,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        large, small = Path(folder) / "large.json", Path(folder) / "small.json"
        large.write_text(json.dumps({"firewall_egress_extra": entries(args.entries)}))
        small.write_text(json.dumps({"firewall_egress_extra": [{**ENTRY, "destination": "::/0"}]}))
        runs = {"large": [], "small": []}
        for _round in range(args.repeat):
            for name, path in (("small", small), ("large", large)):
                runs[name].append(refuse_once(path))
    report = {}
    for name, results in runs.items():
        report[name] = {
            "entries": args.entries if name == "large" else 1,
            "median_seconds": statistics.median(r["seconds"] for r in results),
            "max_rss_mib": max(r["max_rss_mib"] for r in results),
            "all_refused": all(r["refused"] for r in results),
            "contacted_host": any(r["contacted_host"] for r in results),
            "message": results[-1]["message"],
        }
    report["ratio_seconds"] = report["large"]["median_seconds"] / report["small"]["median_seconds"]
    report["ratio_rss"] = report["large"]["max_rss_mib"] / report["small"]["max_rss_mib"]
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["large"]["all_refused"] and report["small"]["all_refused"] else 1


if __name__ == "__main__":
    sys.exit(main())
