"""Lynis hardening index and suggestions: a fresh lab host, the same host after
playbooks/hardening.yml, and the converged lab host (site.yml + hardening),
side by side in one run; plus the converge and check-mode re-run times of
playbooks/hardening.yml through SSH.

    sudo .venv/bin/python bench/lynis_index.py [--repeat 3] [--json out.json] [--hosts fresh,lab,vm]

Lynis 3.0.8 is the Debian package, unpacked (not installed) into
/var/tmp/enclave-lynis on each host and removed afterwards, with
`skip-upgrade-test=yes` in its custom profile (the upgrade check would query
the internet). The .deb comes from `apt-get download lynis` on this machine
unless --lynis-deb names one. The fresh host is a throwaway container from
the lab's host image (enclave-bench-hardening, 198.51.100.39), started like
lab/up starts the lab host and removed at the end; the mirror configuration
(playbooks/mirrors.yml) is applied to it before the timed converge, as
site.yml does. Needs the lab (lab/up); `vm` audits the lab VM (lab/vm/up) after
its converge, through the ssh_config lab/vm/up writes. Besides the index, each
host's result names the tests that withheld hardening points (from Lynis's
log), which is where the index is won or lost. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from lab_host import LAB_SSH_KEY, podman, wait_for_ssh  # noqa: E402

NAME = "enclave-bench-hardening"
ADDRESS = "198.51.100.39"
IMAGE = "localhost/enclave-lab-host:current"
REMOTE_DIR = "/var/tmp/enclave-lynis"
LAB_STATE = Path(os.environ.get("ENCLAVE_LAB_STATE", REPO / ".lab"))
VM_SSH = ["ssh", "-F", str(LAB_STATE / "vm" / "ssh_config")]
HOSTS = ("fresh", "lab", "vm")
SSH = [
    "ssh",
    "-i",
    str(LAB_SSH_KEY),
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
]


def ansible_env(control_dir):
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
    }


def playbook(inventory, name, *args, control_dir):
    started = time.monotonic()
    result = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / name), *args],
        cwd=REPO,
        env=ansible_env(control_dir),
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"{name} {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    recap = [line for line in result.stdout.splitlines() if "ok=" in line and "changed=" in line]
    return elapsed, recap[-1].split(":", 1)[1].strip() if recap else ""


def lynis_tree(deb):
    """The Debian package laid out as Lynis's own tarball: ./lynis, ./include, ./db, ./plugins, profiles."""
    root = Path(tempfile.mkdtemp(prefix="enclave-lynis-"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root / "pkg")], check=True)
    tree = root / "enclave-lynis"
    tree.mkdir()
    shutil.copy(root / "pkg/usr/sbin/lynis", tree / "lynis")
    for part in ("include", "db"):
        shutil.copytree(root / "pkg/usr/share/lynis" / part, tree / part)
    shutil.copytree(root / "pkg/etc/lynis/plugins", tree / "plugins")
    shutil.copy(root / "pkg/etc/lynis/default.prf", tree / "default.prf")
    (tree / "custom.prf").write_text("skip-upgrade-test=yes\n")
    archive = root / "lynis.tar"
    subprocess.run(["tar", "-C", str(root), "--owner=0", "--group=0", "-cf", str(archive), "enclave-lynis"], check=True)
    return archive


def lynis_archive(tmp, deb=None):
    """Lynis from ``deb``, or from Debian's package downloaded into ``tmp``, as a tar to unpack on a host."""
    if deb is None:
        subprocess.run(["apt-get", "download", "lynis"], cwd=tmp, check=True, capture_output=True)
        deb = next(tmp.glob("lynis_*.deb"))
    return lynis_tree(deb)


LOG_MARK = "--- enclave-lynis log ---"


def points_lost(log_lines):
    """Hardening points each Lynis test withheld, from its log: {test ID: (got, max)} for partial scores."""
    lost = {}
    test = None
    for line in log_lines:
        if "Performing test ID " in line:
            test = line.split("Performing test ID ", 1)[1].split()[0]
        elif "assigned partial number of hardening points (" in line and test:
            got, _of, most = line.split("hardening points (", 1)[1].split(")", 1)[0].split()
            prior = lost.get(test, (0, 0))
            lost[test] = (prior[0] + int(got), prior[1] + int(most))
    return lost


def run_lynis(ssh_target, archive, ssh=None):
    """Unpack Lynis on the host, audit, read the report and the points per test, remove everything again."""
    script = (
        # As root, or Lynis skips what only root may read and scores lower.
        f'set -e; test "$(id -u)" -eq 0; rm -rf {REMOTE_DIR}; tar -C /var/tmp -xf -; cd {REMOTE_DIR}; '
        "sh ./lynis audit system --quick --no-colors "
        f"--log-file {REMOTE_DIR}/lynis.log --report-file {REMOTE_DIR}/report.dat >/dev/null 2>&1 || true; "
        f"cat {REMOTE_DIR}/report.dat; echo '{LOG_MARK}'; "
        f"grep -E 'Performing test ID|hardening points' {REMOTE_DIR}/lynis.log || true; rm -rf {REMOTE_DIR}"
    )
    started = time.monotonic()
    # ssh hands the remote shell one command line: the script must reach sudo
    # as one quoted word, or only its first word runs as root.
    result = subprocess.run(
        [*(ssh or SSH), *ssh_target, f"sudo sh -c {shlex.quote(script)}"],
        input=archive.read_bytes(),
        capture_output=True,
        check=True,
    )
    report, _mark, log = result.stdout.decode(errors="replace").partition(LOG_MARK)
    lines = report.splitlines()
    index = next((line.split("=", 1)[1] for line in lines if line.startswith("hardening_index=")), None)
    lost = points_lost(log.splitlines())
    return {
        "index": int(index) if index else None,
        "suggestions": [line.split("=", 1)[1] for line in lines if line.startswith("suggestion[]=")],
        "warnings": [line.split("=", 1)[1] for line in lines if line.startswith("warning[]=")],
        "points_lost": {test: f"{got}/{most}" for test, (got, most) in sorted(lost.items())},
        "seconds": round(time.monotonic() - started, 1),
    }


def start_fresh_host(tmp):
    podman("rm", "--force", "--ignore", NAME)
    podman(
        "run",
        "--detach",
        "--name",
        NAME,
        "--hostname",
        NAME,
        "--label",
        "io.enclave.test=bench-hardening",
        "--network",
        "enclave-lab",
        "--ip",
        ADDRESS,
        "--systemd=always",
        "--privileged",
        "--cgroupns=private",
        IMAGE,
    )
    for _attempt in range(120):
        if podman("exec", NAME, "systemctl", "is-active", "--quiet", "ssh", check=False).returncode == 0:
            break
        time.sleep(0.5)
    podman(
        "exec",
        "-i",
        NAME,
        "install",
        "-m",
        "0600",
        "-o",
        "enclave-admin",
        "-g",
        "enclave-admin",
        "/dev/stdin",
        "/home/enclave-admin/.ssh/authorized_keys",
        input=LAB_SSH_KEY.with_suffix(".pub").read_text(),
    )
    wait_for_ssh(NAME, ADDRESS)
    inventory = tmp / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
    (inventory / "hosts.yml").write_text(
        f"llm_servers:\n  hosts:\n    {NAME}:\n      ansible_host: {ADDRESS}\n"
        f"      ansible_ssh_private_key_file: {LAB_SSH_KEY}\n"
    )
    return inventory


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--repeat", type=int, default=3, help="check-mode re-runs (median)")
    parser.add_argument("--lynis-deb", type=Path, help="lynis_3.0.8 .deb (default: apt-get download lynis)")
    parser.add_argument(
        "--hosts",
        default="fresh,lab",
        help="comma-separated, of: fresh (a new host, then hardening.yml, timed), lab (the container lab host), "
        "vm (the lab VM)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    hosts = set(args.hosts.split(","))
    if not hosts or not hosts <= set(HOSTS):
        parser.error(f"--hosts takes a comma-separated list of {', '.join(HOSTS)}, not {args.hosts!r}")

    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as tmpdir:
        tmp = Path(tmpdir)
        archive = lynis_archive(tmp, args.lynis_deb)
        control_dir = tmp / "cp"
        control_dir.mkdir()
        results = {}
        if "fresh" in hosts:
            try:
                inventory = start_fresh_host(tmp)
                admin = [f"enclave-admin@{ADDRESS}"]
                results["fresh lab host"] = run_lynis(admin, archive)
                playbook(inventory, "mirrors.yml", control_dir=control_dir)
                converge, recap = playbook(inventory, "hardening.yml", control_dir=control_dir)
                checks = [
                    playbook(inventory, "hardening.yml", "--check", control_dir=control_dir)
                    for _run in range(args.repeat)
                ]
                results["fresh host + hardening.yml"] = run_lynis(admin, archive)
                results["fresh host + hardening.yml"].update(
                    converge_s=round(converge, 1),
                    converge_recap=recap,
                    check_s=round(statistics.median(t for t, _recap in checks), 1),
                    check_recap=checks[-1][1],
                )
            finally:
                # Killed, not shut down: on a cgroup v1 machine the throwaway
                # host's systemd-shutdown removed the lab host's cgroup in the
                # shared systemd hierarchy, after which `podman exec` into the
                # lab host failed.
                podman("rm", "--force", "--time", "0", "--ignore", NAME, check=False)
        if "lab" in hosts:
            results["lab host (site.yml)"] = run_lynis(["enclave-admin@198.51.100.20"], archive)
        if "vm" in hosts:
            results["lab VM (site.yml)"] = run_lynis(["enclave-lab-vm"], archive, ssh=VM_SSH)

    print("| host | Lynis index | suggestions | warnings | converge | check-mode re-run (median) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['index']} | {len(r['suggestions'])} | {len(r['warnings'])} | "
            f"{r.get('converge_s', '')} | {r.get('check_s', '')} |"
        )
    for name, r in results.items():
        print(f"\n{name}: remaining suggestions")
        for line in r["suggestions"]:
            print(f"  {line}")
        for line in r["warnings"]:
            print(f"  WARNING {line}")
        print(f"{name}: hardening points withheld (got/max)")
        for test, score in r["points_lost"].items():
            print(f"  {test} {score}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
