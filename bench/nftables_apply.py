"""Benchmark: applying and comparing the enclave policy vs. one rule per entry.

Measures, side by side in one run and inside a network namespace of its own
(the machine's ruleset is never touched):

  ours/apply      render -> nft -c -> one `nft -f` transaction (named sets)
  ours/compare    what check mode and a converged run do: render, nft -c, list
                  the live table, load the rendering into a throwaway namespace,
                  compare normalised JSON
  naive/commands  one `nft add rule` process per egress entry (the imperative
                  style public roles use)
  naive/file      all those rules in one `nft -f` (no sets): isolates what the
                  sets buy from what one transaction buys

Usage (root):  python3 bench/nftables_apply.py [--sizes 10,1000,10000] [--repeat 3]
Prints a table and, with --json FILE, writes the figures.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from collection_lib import module_utils

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = f"enc-bench-{os.getpid()}"


def nft(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, check=True).stdout


def egress_entries(count: int) -> list[dict]:
    """Distinct (address, port) pairs in documentation ranges; no packet is ever sent."""
    networks = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    hosts = [str(h) for net in networks for h in net.hosts()]
    return [
        {
            "destination": hosts[i % len(hosts)],
            "proto": "tcp",
            "ports": [10000 + i // len(hosts)],
            "owner": "bench",
            "reason": "benchmark entry",
        }
        for i in range(count)
    ]


def policy(count: int) -> dict:
    return {
        "zones": {"admin": ["192.0.2.0/28"], "clinical": ["198.51.100.0/24"], "cluster": []},
        "ingress": [{"zone": "admin", "proto": "tcp", "ports": [22]}],
        "egress": egress_entries(count),
        "deny_egress_uids": [65534],
    }


def timed(fn, *args):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def ours_apply(lib, pol: dict, workdir: Path) -> None:
    path = workdir / "enclave.nft"
    path.write_text(lib.render_ruleset(pol))
    nft("-c", "-f", str(path))
    nft("-f", str(path))


def ours_compare(lib, pol: dict, workdir: Path) -> bool:
    path = workdir / "enclave.nft"
    path.write_text(lib.render_ruleset(pol))
    nft("-c", "-f", str(path))
    live = nft("-j", "list", "table", "inet", "enclave")
    wanted = subprocess.run(
        [
            "unshare",
            "--net",
            "--",
            "/bin/sh",
            "-c",
            '"$0" -f "$1" && "$0" -j list table inet enclave',
            "nft",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return lib.normalise_ruleset(live) == lib.normalise_ruleset(wanted)


NAIVE_HEAD = [
    "add table inet naive",
    "add chain inet naive output { type filter hook output priority 0; policy drop; }",
]


def naive_rules(pol: dict) -> list[str]:
    return [
        f"add rule inet naive output ip daddr {e['destination']} tcp dport {e['ports'][0]} accept"
        for e in pol["egress"]
    ]


def naive_commands(pol: dict) -> None:
    for line in NAIVE_HEAD + naive_rules(pol):
        nft(*line.split())


def naive_file(pol: dict) -> None:
    nft("-f", "-", stdin="\n".join(NAIVE_HEAD + naive_rules(pol)) + "\n")


def reset() -> None:
    subprocess.run(["nft", "flush", "ruleset"], check=True)  # only ever inside the bench namespace


def measure(sizes: list[int], repeat: int, naive_limit: int) -> list[dict]:
    lib = module_utils("netpolicy.nftables_policy")
    rows = []
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as tmp:
        workdir = Path(tmp)
        for size in sizes:
            pol = policy(size)
            row = {"entries": size}
            samples = {"ours_apply": [], "ours_compare": [], "naive_file": [], "naive_commands": []}
            for _run in range(repeat):
                reset()
                samples["ours_apply"].append(timed(ours_apply, lib, pol, workdir)[0])
                seconds, equal = timed(ours_compare, lib, pol, workdir)
                if not equal:
                    raise SystemExit(f"{size} entries: the converged table did not compare equal")
                samples["ours_compare"].append(seconds)
                reset()
                samples["naive_file"].append(timed(naive_file, pol)[0])
                if size <= naive_limit:
                    reset()
                    samples["naive_commands"].append(timed(naive_commands, pol)[0])
            for key, values in samples.items():
                row[key] = statistics.median(values) if values else None
            rows.append(row)
    reset()
    return rows


def report(rows: list[dict]) -> str:
    lines = [
        f"{'entries':>8} {'ours apply':>11} {'ours compare':>13} {'naive file':>11} {'naive cmds':>11}"
        f" {'cmds/ours':>10} {'file/ours':>10}"
    ]
    for r in rows:

        def cell(v):
            return f"{v:10.3f}s" if v is not None else f"{'-':>11}"

        cmds_ratio = f"{r['naive_commands'] / r['ours_apply']:9.1f}x" if r["naive_commands"] else f"{'-':>10}"
        lines.append(
            f"{r['entries']:>8} {cell(r['ours_apply'])} {cell(r['ours_compare']):>13} {cell(r['naive_file'])}"
            f" {cell(r['naive_commands'])} {cmds_ratio} {r['naive_file'] / r['ours_apply']:9.1f}x"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--naive-limit", type=int, default=10000, help="largest size for the per-command baseline")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the benchmark needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    if not args.inside:
        # Re-run inside a namespace of our own, so `flush ruleset` there can
        # never reach the machine's rules.
        subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
        try:
            return subprocess.run(
                ["ip", "netns", "exec", NAMESPACE, sys.executable, __file__, *sys.argv[1:], "--inside"], check=False
            ).returncode
        finally:
            subprocess.run(["ip", "netns", "delete", NAMESPACE], check=False)
    here = subprocess.run(["ip", "netns", "identify"], capture_output=True, text=True, check=False).stdout.strip()
    if not here.startswith("enc-bench-"):
        print("refusing to run outside the benchmark's own network namespace", file=sys.stderr)
        return 2
    rows = measure([int(s) for s in args.sizes.split(",")], args.repeat, args.naive_limit)
    print(report(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
