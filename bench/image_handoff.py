"""Handing the vLLM image to the service account: the archive root writes.

    sudo .venv/bin/python bench/image_handoff.py [--image REF] [--repeat 2] [--json out.json]

Side by side in one run, alternating, from the lab's internal registry (a
container lab/up started; nothing else is contacted):

- ``pull+save``: what podman_rootless did before: ``podman pull`` into a
  scratch storage of root's, ``podman save --format oci-archive``, ``podman rmi``;
- ``skopeo``: what it does now: ``skopeo copy --remove-signatures docker://REF
  oci-archive:PATH:NAME``.

Each archive is then checked the way the account uses it: loaded into a
second scratch storage, where ``podman image exists REF`` must answer yes
(the load itself is the same for both, so it is not timed). The lab's
registry speaks plain HTTP, so TLS verification is off here; the signature
policy is the host's concern and costs the same either way. Needs root,
podman and skopeo (``apt-get install skopeo``), and the lab (``make lab-up``).
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB_STATE = Path(os.environ.get("ENCLAVE_LAB_STATE", REPO / ".lab"))
REGISTRY = "198.51.100.10:5000"


def default_image():
    return f"{REGISTRY}/enclave/vllm-cpu@{(LAB_STATE / 'vllm-image.digest').read_text().strip()}"


def podman(storage: Path, *args):
    command = ["podman", "--root", str(storage / "root"), "--runroot", str(storage / "run"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=True)


def timed(way, *args):
    start = time.monotonic()
    way(*args)
    return time.monotonic() - start


def pull_and_save(image, archive: Path, storage: Path):
    podman(storage, "pull", "--quiet", "--tls-verify=false", image)
    podman(storage, "save", "--quiet", "--format", "oci-archive", "--output", str(archive), image)
    podman(storage, "rmi", image)


def skopeo_copy(image, archive: Path, _storage: Path):
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--remove-signatures",
            "--src-tls-verify=false",
            f"docker://{image}",
            f"oci-archive:{archive}:{image.split('@')[0]}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )


def loads_as_the_image(image, archive: Path, storage: Path):
    try:
        podman(storage, "load", "--quiet", "--input", str(archive))
        found = subprocess.run(
            ["podman", "--root", str(storage / "root"), "--runroot", str(storage / "run"), "image", "exists", image],
            check=False,
        )
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    return found.returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--image", help="default: the lab's vLLM image, by digest")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    image = args.image or default_image()
    ways = {"pull+save": pull_and_save, "skopeo": skopeo_copy}
    seconds = {name: [] for name in ways}
    loads = {name: [] for name in ways}
    sizes = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as folder:
        for _round in range(args.repeat):
            for name, way in ways.items():
                scratch = Path(folder) / name
                archive = Path(folder) / f"{name}.tar"
                seconds[name].append(timed(way, image, archive, scratch))
                sizes[name] = archive.stat().st_size
                loads[name].append(loads_as_the_image(image, archive, Path(folder) / "account"))
                archive.unlink()
                shutil.rmtree(scratch, ignore_errors=True)
    report = {
        "image": image,
        "rounds": args.repeat,
        **{
            name: {
                "median_seconds": round(statistics.median(seconds[name]), 2),
                "archive_mib": round(sizes[name] / 2**20),
                "loads_as_the_image": all(loads[name]),
            }
            for name in ways
        },
    }
    report["ratio"] = round(report["pull+save"]["median_seconds"] / report["skopeo"]["median_seconds"], 1)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(report[name]["loads_as_the_image"] for name in ways) else 1


if __name__ == "__main__":
    sys.exit(main())
