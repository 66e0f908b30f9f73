"""Benchmark: a fetch interrupted at 50% and resumed vs. a fetch from scratch; parallel vs. serial.

Generates a mirror tree of shards (default 8 x 32 MiB) in a temporary folder,
serves it as plain files with the publisher fixture (tests/fixtures/publisher)
on 127.0.0.1, and fetches it with model_fetch's own engine
(``fetch_files``, what the module runs) into fresh staging folders:

  scratch       one fetch into an empty folder: bytes transferred
  resumed       a fetch cut off by the server after 50% of the bytes (one
                attempt, so the run fails and keeps its partial files), then a
                second run that resumes: bytes transferred by both runs
                together, and re-transferred = both runs - the model's size
                (goal: about 0; a fetcher that starts over would re-transfer
                what the first run got, about 50%)
  workers=N     fetch from scratch with N files at a time, alternating with
                workers=1 in each round (median MiB/s of --rounds); once with
                the server as fast as it goes, once with each response capped
                at --stream-mib-s (default 40), like a TCP stream limited by
                its window and round trip on a real network

The server is one Python process on the same 2 cores as the client, so the
parallel figure is bounded by it here; on a real mirror (nginx, a network of
several Gbit/s, one TCP stream per file) parallel streams fill the link where
one stream is limited by its window and round-trip time.

Usage:  python3 bench/model_fetch_resume.py [--files 8] [--size-mib 32] [--rounds 3]
                [--workers 4] [--stream-mib-s 40] [--dir /var/tmp] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from collection_lib import module_utils

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "publisher"))

from control import serving  # noqa: E402

MIB = 1 << 20
GOAL_RETRANSFER = 0.01  # of the model's size


def make_tree(base, files, size):
    folder = base / "tree" / "bench"
    folder.mkdir(parents=True)
    rng = random.Random(1)
    block = rng.randbytes(MIB)
    for index in range(files):
        with open(folder / f"model-{index + 1:05d}-of-{files:05d}.safetensors", "wb") as handle:
            for step in range(size // MIB):
                handle.write(block[step % 7 :] + block[: step % 7])
    return base / "tree"


def jobs_for(tree, url):
    return [
        {"path": path.name, "size": path.stat().st_size, "url": f"{url}/bench/{path.name}"}
        for path in sorted((tree / "bench").iterdir())
    ]


def fetch(lib, url, tree, dest, workers, attempts=3):
    shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(f"{dest}.partial", ignore_errors=True)
    return lib.fetch_files(lib.HttpSource(timeout=30), jobs_for(tree, url), str(dest), f"{dest}.partial", workers)


def resumed(lib, tree, base, total, workers):
    dest = base / "resumed"
    shutil.rmtree(dest, ignore_errors=True)
    with serving(tree, "--fail-after", total // 2) as url:
        first = lib.fetch_files(
            lib.HttpSource(timeout=30), jobs_for(tree, url), str(dest), f"{dest}.partial", workers, max_attempts=1
        )
    with serving(tree) as url:
        second = lib.fetch_files(lib.HttpSource(timeout=30), jobs_for(tree, url), str(dest), f"{dest}.partial", workers)
    assert not second["errors"], second["errors"]
    both = first["bytes_transferred"] + second["bytes_transferred"]
    return {
        "first_run_bytes": first["bytes_transferred"],
        "first_run_failed_files": len(first["errors"]),
        "second_run_bytes": second["bytes_transferred"],
        "second_run_reused_bytes": second["bytes_reused"],
        "files_resumed": second["files_resumed"],
        "retransferred_bytes": both - total,
        "restart_would_retransfer_bytes": first["bytes_transferred"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--stream-mib-s", type=float, default=40, help="the per-stream cap of the second series")
    parser.add_argument("--dir", help="where to create the files (default: the system's temporary folder)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    lib = module_utils("models.fetch")
    base = Path(tempfile.mkdtemp(prefix="enclave-bench-fetch-", dir=args.dir))
    try:
        tree = make_tree(base, args.files, args.size_mib * MIB)
        total = args.files * args.size_mib * MIB
        with serving(tree) as url:
            scratch = fetch(lib, url, tree, base / "scratch", args.workers)
        resume = resumed(lib, tree, base, total, args.workers)
        rates = {}
        for cap in (0, args.stream_mib_s):
            with serving(tree, "--stream-mib-s", cap) as url:
                for _round in range(args.rounds):
                    for workers in (1, args.workers):
                        report = fetch(lib, url, tree, base / f"w{workers}", workers)
                        rates.setdefault((cap, workers), []).append(total / MIB / report["seconds"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    median = {key: statistics.median(values) for key, values in rates.items()}
    serial, parallel = median[(0, 1)], median[(0, args.workers)]
    capped_serial, capped_parallel = median[(args.stream_mib_s, 1)], median[(args.stream_mib_s, args.workers)]
    figures = {
        "model_bytes": total,
        "files": args.files,
        "scratch_bytes": scratch["bytes_transferred"],
        **resume,
        "serial_mib_s": round(serial, 1),
        "parallel_mib_s": round(parallel, 1),
        "parallel_workers": args.workers,
        "stream_cap_mib_s": args.stream_mib_s,
        "capped_serial_mib_s": round(capped_serial, 1),
        "capped_parallel_mib_s": round(capped_parallel, 1),
        "cpus": os.cpu_count(),
    }
    share = resume["retransferred_bytes"] / total
    print(f"model: {args.files} files, {total / MIB:.0f} MiB, loopback, {os.cpu_count()} CPUs")
    print(f"{'':34} {'bytes':>12} {'of model':>9}")
    print(f"{'from scratch':34} {scratch['bytes_transferred']:>12} {scratch['bytes_transferred'] / total:>9.1%}")
    print(f"{'cut at 50%: first run':34} {resume['first_run_bytes']:>12} {resume['first_run_bytes'] / total:>9.1%}")
    print(
        f"{'cut at 50%: resuming run':34} {resume['second_run_bytes']:>12} {resume['second_run_bytes'] / total:>9.1%}"
    )
    print(f"{'re-transferred (both - model)':34} {resume['retransferred_bytes']:>12} {share:>9.2%}")
    restart = resume["restart_would_retransfer_bytes"]
    print(f"{'re-transferred by a restart':34} {restart:>12} {restart / total:>9.1%}")
    print(f"serial (1 worker): {serial:.0f} MiB/s; parallel ({args.workers} workers): {parallel:.0f} MiB/s; "
          f"ratio {parallel / serial:.2f}x (median of {args.rounds})")  # fmt: skip
    print(f"each stream capped at {args.stream_mib_s:g} MiB/s: serial {capped_serial:.0f} MiB/s; parallel "
          f"{capped_parallel:.0f} MiB/s; ratio {capped_parallel / capped_serial:.2f}x")  # fmt: skip
    met = share <= GOAL_RETRANSFER
    print(f"goal: re-transferred <= {GOAL_RETRANSFER:.0%} of the model: {'met' if met else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
