"""Benchmark: verifying a model folder with model_manifest vs. `sha256sum -c`.

Generates a model folder of random-ish shards (default 8 x 512 MiB = 4 GiB) in a
temporary folder on the local disk, writes its manifest with the module's own
functions, reads every shard once so all of it sits in the page cache, then
measures, alternating within each round:

  ours/full          verify_folder(mode="full"): the function the module calls,
                     one worker thread per CPU, biggest file first
  sha256sum -c       coreutils on the same files, from the same page cache
  ours/incremental   verify_folder(mode="incremental") of the unchanged folder
                     after one run that wrote the cache

and, once, the module itself through `ansible -m enclave.llm.model_manifest`
(Ansible's start-up included) plus the engine variants (threads or processes,
read() or mmap, and one thread alone) that picked the module's defaults.

The physical limit is cores x the single-core rate of
`openssl speed -evp sha256 -bytes 1048576 -seconds 3` (hashlib uses the same
OpenSSL code, SHA-NI where the CPU has it); measured before and after the rounds,
the higher rate counts.

Goals (exit status 1 when one is missed): ours/full >= 10x `sha256sum -c`,
>= 75% of the limit, and ours/incremental >= 50x faster than ours/full. Where
the limit itself is less than 10x `sha256sum -c` (a fast coreutils build), the
first goal cannot be met by any program; it is then reported as unreachable and
does not set the exit status.

Other processes on the machine take CPU from our run on every core but hardly
from `sha256sum` on one core, which skews the ratio: a round during which they used
more than --max-others of the CPUs (read from /proc/stat) is measured again, up
to three times the rounds in all, and the share is printed.

Usage:  python3 bench/model_manifest_verify.py [--files 8] [--size-mib 512] [--rounds 3]
                [--dir /var/tmp] [--no-variants] [--no-module] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from collection_lib import module_utils

REPO = Path(__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"
GIB = 1 << 30
MIB = 1 << 20
GOALS = {"vs_sha256sum": 10.0, "of_limit": 0.75, "incremental_speedup": 50.0}


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def openssl_rate() -> float:
    """Single-core SHA-256 rate of OpenSSL on 1 MiB blocks, in bytes per second."""
    out = subprocess.run(
        ["openssl", "speed", "-evp", "sha256", "-bytes", "1048576", "-seconds", "3"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_openssl_speed(out)


def parse_openssl_speed(text: str) -> float:
    """Bytes per second from the result table of `openssl speed` ("sha256  1784344.48k")."""
    for line in reversed(text.splitlines()):
        match = re.match(r"^\s*(?:sha256|SHA256|SHA2-256)\s+([\d.]+)k\s*$", line)
        if match:
            return float(match.group(1)) * 1000
    raise SystemExit(f"could not read the rate from openssl speed's output:\n{text}")


def generate(folder: Path, files: int, size: int) -> list[str]:
    """Shards of random data: one 64 MiB random block, each copy stamped with its file and offset."""
    block = bytearray(os.urandom(min(size, 64 * MIB)))
    names = []
    for index in range(files):
        name = f"model-{index + 1:05d}-of-{files:05d}.safetensors"
        with open(folder / name, "wb") as handle:
            written = 0
            while written < size:
                chunk = min(len(block), size - written)
                block[:16] = index.to_bytes(8, "little") + written.to_bytes(8, "little")
                handle.write(memoryview(block)[:chunk])
                written += chunk
        names.append(name)
    (folder / "config.json").write_text('{"model_type": "deepseek_v3"}\n')
    return names


def resident_fraction(folder: Path, names: list[str]) -> float:
    """Share of the shards' bytes in the page cache (fincore), or -1 when fincore is missing."""
    if shutil.which("fincore") is None:
        return -1.0
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", *[str(folder / n) for n in names]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    res = size = 0
    for line in out.splitlines():
        r, s = line.split()
        res, size = res + int(r), size + int(s)
    return res / size if size else 0.0


def warm(folder: Path, names: list[str]) -> None:
    for name in names:
        with open(folder / name, "rb", buffering=0) as handle:
            while handle.read(8 * MIB):
                pass


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def cpu_busy_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def metered(fn, cores, *args, **kwargs):
    """``(seconds, others, own, result)``: others is the share of all CPUs that other
    processes (and the hypervisor, as steal) used while ``fn`` ran, the disturbance;
    own is the CPU seconds this process and its children used, which the disturbance
    hardly changes."""
    busy0, steal0 = cpu_busy_seconds()
    own0 = own_cpu_seconds()
    seconds, result = timed(fn, *args, **kwargs)
    busy1, steal1 = cpu_busy_seconds()
    own = own_cpu_seconds() - own0
    others = max(0.0, (busy1 - busy0) - own) + (steal1 - steal0)
    return seconds, others / (seconds * cores) if seconds > 0 else 0.0, own, result


def run_module(folder: Path) -> dict:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
    }
    ansible = Path(sys.executable).parent / "ansible"
    command = [
        str(ansible) if ansible.exists() else "ansible",
        *("localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"),
        *("-m", "enclave.llm.model_manifest", "-a", json.dumps({"path": str(folder)})),
    ]
    seconds, proc = timed(subprocess.run, command, cwd=REPO, env=env, capture_output=True, text=True)
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise SystemExit(f"the module gave no result (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
    if not result.get("ok"):
        raise SystemExit(f"the module did not verify the folder: {result.get('msg')}")
    return {"wall_seconds": seconds, "module_gib_per_s": result["gib_per_s"], "workers": result["workers"]}


def measure(args, lib, io_lib) -> dict:
    cores = io_lib.default_workers()
    size = args.size_mib * MIB
    total = args.files * size
    need = total + GIB
    if mem_available() < need:
        raise SystemExit(
            f"{total / GIB:.1f} GiB of shards must fit in the page cache with 1 GiB to spare, but only "
            f"{mem_available() / GIB:.1f} GiB of memory is available: use fewer or smaller files."
        )
    parent = args.dir or tempfile.gettempdir()
    if shutil.disk_usage(parent).free < total + GIB:
        raise SystemExit(f"{parent} has less than {(total + GIB) / GIB:.1f} GiB free.")
    figures = {"cores": cores, "files": args.files, "size_mib": args.size_mib, "bytes": total}
    figures["openssl_before"] = openssl_rate()
    work = Path(tempfile.mkdtemp(prefix="enclave-bench-manifest-", dir=parent))
    try:
        folder = work / "models" / "bench" / REVISION
        folder.mkdir(parents=True)
        names = generate(folder, args.files, size)
        hashed = io_lib.hash_folder(str(folder))
        manifest, problems = lib.build_manifest(
            "bench", "generated", REVISION, "MIT", lib.utc_now(), hashed["observed"], {}
        )
        if problems:
            raise SystemExit("; ".join(problems))
        (folder / lib.MANIFEST_NAME).write_text(lib.render_manifest(manifest))
        # Beside the folder, not in it: the module would report it as an unexpected file.
        sums = work / "SHA256SUMS"
        sums.write_text("".join(f"{f['sha256']}  {f['path']}\n" for f in manifest["files"]))
        warm(folder, names)
        figures["resident_before"] = resident_fraction(folder, names)
        figures["load_before"] = loadavg()

        def ours_full():
            report = io_lib.verify_folder(str(folder), manifest, mode="full")
            if not report["ok"]:
                raise SystemExit(f"ours/full did not verify: {lib.findings_message(str(folder), report)}")
            return report

        def theirs():
            subprocess.run(
                ["sha256sum", "--check", "--quiet", "--strict", str(sums)],
                cwd=folder,
                check=True,
            )

        cache_path = str(work / "cache" / "bench.json")

        def ours_incremental():
            report = io_lib.verify_folder(str(folder), manifest, mode="incremental", cache_path=cache_path)
            if not report["ok"]:
                raise SystemExit("ours/incremental did not verify")
            return report

        samples = {"ours_full": [], "sha256sum": [], "ours_incremental": []}
        disturbance = {"ours_full": [], "sha256sum": [], "ours_incremental": []}
        variants, variant_cpu = {}, {}
        # The cache takes a file only when its mtime/ctime is older than the racy window.
        newest = max(max(os.stat(folder / n).st_mtime_ns, os.stat(folder / n).st_ctime_ns) for n in names)
        time.sleep(max(0.0, newest / 1e9 + lib.RACY_NS / 1e9 + 0.1 - time.time()))
        primed = ours_incremental()
        if primed["hashed_files"] != len(manifest["files"]) or not primed["cache"]["written"]:
            raise SystemExit(f"priming the cache went wrong: {primed['cache']}")
        attempts = 0
        figures["discarded_rounds"] = 0
        while len(samples["ours_full"]) < args.rounds and attempts < args.rounds * 3:
            attempts += 1
            round_ = {}
            seconds, others, _own, report = metered(ours_full, cores)
            figures["workers"] = report["workers"]
            round_["ours_full"] = (seconds, others)
            seconds, others, _own, _report = metered(theirs, cores)
            round_["sha256sum"] = (seconds, others)
            seconds, others, _own, report = metered(ours_incremental, cores)
            if report["hashed_files"] != 0:
                raise SystemExit(f"ours/incremental hashed {report['hashed_files']} files of an unchanged folder")
            round_["ours_incremental"] = (seconds, others)
            # A round in which other processes took more than --max-others of the CPUs
            # while we hashed is measured again (up to 3x the rounds in all).
            if max(round_["ours_full"][1], round_["sha256sum"][1]) > args.max_others:
                remaining = args.rounds * 3 - attempts
                if remaining >= args.rounds - len(samples["ours_full"]):
                    figures["discarded_rounds"] += 1
                    continue
            for key, (seconds, others) in round_.items():
                samples[key].append(seconds)
                disturbance[key].append(others)
            if args.variants:
                engines = [(executor, io, 0) for executor in ("thread", "process") for io in io_lib.IO_METHODS]
                for executor, io, workers in [*engines, ("thread", "mmap", 1)]:
                    key = f"{executor}/{io}" + (f" x{workers}" if workers else "")
                    seconds, _others, own, report = metered(
                        io_lib.verify_folder,
                        cores,
                        str(folder),
                        manifest,
                        mode="full",
                        io=io,
                        executor=executor,
                        workers=workers,
                    )
                    if not report["ok"]:
                        raise SystemExit(f"variant {key} did not verify")
                    variants.setdefault(key, []).append(seconds)
                    variant_cpu.setdefault(key, []).append(own)
        figures["disturbance"] = disturbance
        if args.module:
            figures["module"] = run_module(folder)
        figures["resident_after"] = resident_fraction(folder, names)
        figures["load_after"] = loadavg()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures["openssl_after"] = openssl_rate()
    figures["samples"] = samples
    figures["variants"] = variants
    figures["variant_cpu"] = variant_cpu
    return figures


def summarise(f: dict) -> dict:
    total = f["bytes"]
    median = {key: statistics.median(values) for key, values in f["samples"].items()}
    rate = {key: total / seconds / GIB for key, seconds in median.items()}
    single = max(f["openssl_before"], f["openssl_after"])
    limit = f["cores"] * single / GIB
    return {
        "median_seconds": median,
        "gib_per_s": rate,
        "openssl_single_core_gib_per_s": single / GIB,
        "limit_gib_per_s": limit,
        "vs_sha256sum": rate["ours_full"] / rate["sha256sum"],
        "ceiling_vs_sha256sum": limit / rate["sha256sum"],
        "of_limit": rate["ours_full"] / limit,
        "incremental_speedup": median["ours_full"] / median["ours_incremental"],
        "variants_gib_per_s": {k: total / statistics.median(v) / GIB for k, v in f["variants"].items()},
        "variants_cpu_s_per_gib": {k: statistics.median(v) / (total / GIB) for k, v in f["variant_cpu"].items()},
        "openssl_cpu_s_per_gib": GIB / single,
    }


def report(f: dict, s: dict) -> tuple[str, bool]:
    def spread(values):
        return " ".join(f"{v:.3f}" for v in values)

    lines = [
        f"model_manifest verify benchmark: {f['files']} x {f['size_mib']} MiB = {f['bytes'] / GIB:.2f} GiB, "
        f"{f['cores']} CPUs, page cache resident {f['resident_before']:.0%} before / {f['resident_after']:.0%} after",
        f"load average before {f['load_before']}, after {f['load_after']}",
        f"openssl speed -evp sha256 (1 MiB blocks, one core): {f['openssl_before'] / GIB:.3f} GiB/s before, "
        f"{f['openssl_after'] / GIB:.3f} GiB/s after -> limit {f['cores']} x "
        f"{s['openssl_single_core_gib_per_s']:.3f} = {s['limit_gib_per_s']:.2f} GiB/s",
        "",
        f"{'what':<34} {'median s':>9} {'GiB/s':>7}  rounds (s)",
    ]
    names = {
        "ours_full": f"model_manifest full ({f.get('workers', '?')} threads)",
        "sha256sum": "sha256sum -c",
        "ours_incremental": "model_manifest incremental",
    }
    for key, label in names.items():
        lines.append(
            f"{label:<34} {s['median_seconds'][key]:>9.3f} {s['gib_per_s'][key]:>7.2f}  {spread(f['samples'][key])}"
        )
    if s["variants_gib_per_s"]:
        lines.append("")
        lines.append(
            "engine variants (full verify; median GiB/s, and CPU s per GiB, which other processes hardly change):"
        )
        for key, rate in s["variants_gib_per_s"].items():
            lines.append(f"  {key:<18} {rate:5.2f} GiB/s  {s['variants_cpu_s_per_gib'][key]:.3f} CPU s/GiB")
        lines.append(f"  {'openssl speed':<18} {'':>11}  {s['openssl_cpu_s_per_gib']:.3f} CPU s/GiB")
    if "module" in f:
        m = f["module"]
        lines.append(
            f"the module through ansible: {m['wall_seconds']:.2f} s wall (Ansible start-up included), "
            f"{m['module_gib_per_s']:.2f} GiB/s hashing, {m['workers']} workers"
        )
    hashing = {key: f["disturbance"][key] for key in ("ours_full", "sha256sum")}
    lines.append(
        "other processes' share of the CPUs while we measured: "
        + ", ".join(f"{key} {statistics.median(v):.0%} (worst {max(v):.0%})" for key, v in hashing.items())
        + f"; rounds measured again because of it: {f['discarded_rounds']}"
    )
    lines.append(
        f"best ratio the hardware allows: limit / sha256sum -c = {s['ceiling_vs_sha256sum']:.1f}x "
        f"(sha256sum -c hashes {s['gib_per_s']['sha256sum']:.3f} GiB/s on one core)"
    )
    lines += ["", f"{'goal':<34} {'measured':>9} {'wanted':>8}"]
    ok = True
    for key, label, fmt in (
        ("vs_sha256sum", "ours / sha256sum -c", "{:.1f}x"),
        ("of_limit", "ours / limit (cores x openssl)", "{:.0%}"),
        ("incremental_speedup", "full / incremental (unchanged)", "{:.0f}x"),
    ):
        met = s[key] >= GOALS[key]
        verdict = "ok" if met else "MISSED"
        if key == "vs_sha256sum" and not met and s["ceiling_vs_sha256sum"] < GOALS[key]:
            # No program can beat the limit: where even the limit is below the goal,
            # the goal says nothing about this code (ours / limit still does).
            verdict = f"unreachable here (the limit is {s['ceiling_vs_sha256sum']:.1f}x)"
        else:
            ok = ok and met
        wanted = ">= " + (fmt.format(GOALS[key]) if key != "of_limit" else f"{GOALS[key]:.0%}")
        lines.append(f"{label:<34} {fmt.format(s[key]):>9} {wanted:>8}  {verdict}")
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", help="where to create the shards (default: the system's temporary folder)")
    parser.add_argument("--no-variants", dest="variants", action="store_false", help="skip the engine variants")
    parser.add_argument("--no-module", dest="module", action="store_false", help="skip the run through ansible")
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.05,
        help="measure a round again when other processes used more than this share of the CPUs (default 0.05)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    for tool in ("openssl", "sha256sum"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    figures = measure(args, module_utils("models.manifest"), module_utils("models.manifest_io"))
    summary = summarise(figures)
    text, ok = report(figures, summary)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "summary": summary}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
