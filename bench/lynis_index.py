"""Lynis hardening index and suggestions: a fresh lab host, the same host after
playbooks/hardening.yml, and the converged lab host (site.yml + hardening),
side by side in one run; plus the converge and check-mode re-run times of
playbooks/hardening.yml through SSH.

    sudo .venv/bin/python bench/lynis_index.py [--repeat 3] [--json out.json] [--vm]

Lynis 3.0.8 is the Debian package, unpacked (not installed) into
/var/tmp/enclave-lynis on each host and removed afterwards, with
`skip-upgrade-test=yes` in its custom profile (the upgrade check would query
the internet). The .deb comes from `apt-get download lynis` on this machine
unless --lynis-deb names one. The fresh host is a throwaway container from
the lab's host image (enclave-bench-hardening, 198.51.100.39), started like
lab/up starts the lab host and removed at the end; the mirror configuration
(playbooks/mirrors.yml) is applied to it before the timed converge, as
site.yml does. Needs the lab (lab/up); --vm also audits the lab VM (lab/vm/up)
after its converge. Nothing here asserts a time.
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
sys.path.insert(0, str(REPO / "tests" / "integration"))

from lab_host import LAB_SSH_KEY, podman, wait_for_ssh  # noqa: E402

NAME = "enclave-bench-hardening"
ADDRESS = "198.51.100.39"
IMAGE = "localhost/enclave-lab-host:current"
REMOTE_DIR = "/var/tmp/enclave-lynis"
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


def run_lynis(ssh_target, archive):
    """Unpack Lynis on the host, audit, read the report, remove everything again."""
    script = (
        f"set -e; rm -rf {REMOTE_DIR}; tar -C /var/tmp -xf -; cd {REMOTE_DIR}; "
        "sh ./lynis audit system --quick --no-colors --no-log "
        f"--report-file {REMOTE_DIR}/report.dat >/dev/null 2>&1 || true; "
        f"cat {REMOTE_DIR}/report.dat; rm -rf {REMOTE_DIR}"
    )
    started = time.monotonic()
    result = subprocess.run(
        [*SSH, *ssh_target, "sudo", "sh", "-c", script], input=archive.read_bytes(), capture_output=True, check=True
    )
    report = result.stdout.decode(errors="replace")
    index = next((line.split("=", 1)[1] for line in report.splitlines() if line.startswith("hardening_index=")), None)
    suggestions = [line.split("=", 1)[1] for line in report.splitlines() if line.startswith("suggestion[]=")]
    warnings = [line.split("=", 1)[1] for line in report.splitlines() if line.startswith("warning[]=")]
    return {
        "index": int(index) if index else None,
        "suggestions": suggestions,
        "warnings": warnings,
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
    parser.add_argument("--vm", action="store_true", help="also audit the lab VM (127.0.0.1:2222)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as tmpdir:
        tmp = Path(tmpdir)
        archive = lynis_archive(tmp, args.lynis_deb)
        control_dir = tmp / "cp"
        control_dir.mkdir()
        results = {}
        try:
            inventory = start_fresh_host(tmp)
            admin = [f"enclave-admin@{ADDRESS}"]
            results["fresh lab host"] = run_lynis(admin, archive)
            playbook(inventory, "mirrors.yml", control_dir=control_dir)
            converge, recap = playbook(inventory, "hardening.yml", control_dir=control_dir)
            checks = [
                playbook(inventory, "hardening.yml", "--check", control_dir=control_dir) for _run in range(args.repeat)
            ]
            results["fresh host + hardening.yml"] = run_lynis(admin, archive)
            results["fresh host + hardening.yml"].update(
                converge_s=round(converge, 1),
                converge_recap=recap,
                check_s=round(statistics.median(t for t, _recap in checks), 1),
                check_recap=checks[-1][1],
            )
        finally:
            podman("rm", "--force", "--time", "5", "--ignore", NAME, check=False)
        results["lab host (site.yml + hardening.yml)"] = run_lynis(["enclave-admin@198.51.100.20"], archive)
        if args.vm:
            results["lab VM (site.yml + hardening.yml)"] = run_lynis(["-p", "2222", "enclave-admin@127.0.0.1"], archive)

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
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
