"""tests/gpu/check_gpu_stack.sh against stand-ins for nvidia-smi, nvidia-ctk, podman and systemd.

The script is meant for real GPU hosts; here every tool it calls is a small
shell stand-in in a temporary PATH and the PCI bus a built sysfs tree, so that
its verdicts (PASS/FAIL per check, the exit status) are tested without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "gpu" / "check_gpu_stack.sh"
PCI = json.loads((Path(__file__).resolve().parent / "fixtures" / "nvidia_smi" / "hgx_h100_8x" / "pci.json").read_text())
BUSES = ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the script refuses to run without root")


def stub(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def host(tmp_path, *, gpus_in_smi=8, persistence="Enabled", fabric="Completed", fm="active", cdi_gpus=8, seen=8):
    """A stand-in host: sysfs with 8 H100 and 4 NVSwitches, tools that answer as told."""
    sysfs = tmp_path / "sys"
    for device in PCI:
        path = sysfs / "bus" / "pci" / "devices" / device["address"]
        path.mkdir(parents=True)
        for name in ("vendor", "device", "class"):
            (path / name).write_text(device[name] + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rows = "".join(
        f"{i}, 00000000:{bus}:00.0, 580.105.08, {persistence if i == 3 else 'Enabled'}, NVIDIA H100 80GB HBM3\n"
        for i, bus in enumerate(BUSES[:gpus_in_smi])
    )
    query = "".join(
        f"GPU 00000000:{bus}:00.0\n    Product Name                          : NVIDIA H100 80GB HBM3\n"
        f"    Fabric\n        State                             : {fabric if i == 0 else 'Completed'}\n"
        "        Status                            : Success\n        CliqueId                          : 0\n"
        "    Processes                             : None\n"
        for i, bus in enumerate(BUSES[:gpus_in_smi])
    )
    (tmp_path / "rows.csv").write_text(rows)
    (tmp_path / "query.txt").write_text(query)
    stub(
        bin_dir,
        "nvidia-smi",
        f'case "$1" in --query-gpu=*) cat "{tmp_path}/rows.csv" ;; -q) cat "{tmp_path}/query.txt" ;; esac\n',
    )
    cdi = "".join(f"nvidia.com/gpu={i}\n" for i in range(cdi_gpus)) + "nvidia.com/gpu=all\n"
    (tmp_path / "cdi.txt").write_text("INFO[0000] Found devices\n" + cdi)
    stub(bin_dir, "nvidia-ctk", f'cat "{tmp_path}/cdi.txt"\n')
    stub(
        bin_dir,
        "systemctl",
        f'case "$*" in *nvidia-fabricmanager*) echo {fm}; [ {fm} = active ] ;; *user@*) exit 0 ;; esac\n',
    )
    stub(bin_dir, "systemd-run", 'while [ "$1" != "--" ]; do shift; done; shift; exec "$@"\n')
    listing = "".join(
        f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08d}-0000-0000-0000-000000000000)\\n" for i in range(seen)
    )
    stub(bin_dir, "podman", f'printf "{listing}"\n')
    spec = tmp_path / "nvidia.yaml"
    spec.write_text("cdiVersion: 0.5.0\n")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "ENCLAVE_GPU_SYSFS": str(sysfs),
        "ENCLAVE_GPU_CDI_SPEC": str(spec),
        "ENCLAVE_GPU_USER": "root",
    }
    return env


def run(env, *args):
    result = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")}
    return result, lines


def test_a_healthy_hgx_host_passes(tmp_path):
    result, lines = run(host(tmp_path), "--driver", "580.105.08")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(lines) == {"pci", "driver", "gpus", "persistence", "fabric", "cdi", "container"}
    assert all(line.startswith("PASS") for line in lines.values()), result.stdout
    assert "8 NVIDIA GPU(s) and 4 NVSwitch(es)" in lines["pci"]
    assert "driver 580.105.08 as expected" in lines["driver"]
    assert result.stdout.splitlines()[-1] == "RESULT: PASS (7 checks)"


@pytest.mark.parametrize(
    ("changes", "args", "check", "message"),
    [
        ({}, ("--driver", "580.95.05"), "driver", "driver 580.105.08 is running, 580.95.05 expected"),
        ({}, ("--gpus", "4"), "pci", "8 NVIDIA GPU(s) on the PCI bus, 4 expected (--gpus)"),
        ({"gpus_in_smi": 7}, (), "gpus", "nvidia-smi reports 7 of 8 GPU(s); not reported: 0000:db:00.0"),
        ({"persistence": "Disabled"}, (), "persistence", "persistence mode off for GPU(s) 3"),
        ({"fabric": "In Progress"}, (), "fabric", "fabric ready on 7 of 8 GPU(s)"),
        ({"fm": "inactive"}, (), "fabric", "nvidia-fabricmanager inactive"),
        ({"cdi_gpus": 6}, (), "cdi", "names 6 GPU(s) of 8"),
        ({"seen": 0}, (), "container", "nvidia-smi -L lists 0 of 8 GPU(s)"),
    ],
)
def test_each_fault_fails_its_check(tmp_path, changes, args, check, message):
    result, lines = run(host(tmp_path, **changes), *args)
    assert result.returncode == 1
    assert lines[check].startswith("FAIL"), result.stdout
    assert message in lines[check], lines[check]
    assert result.stdout.splitlines()[-1].startswith("RESULT: FAIL")


def test_usage_errors(tmp_path):
    env = host(tmp_path)
    assert run(env, "--gpus", "eight")[0].returncode == 2
    assert run(env, "--frobnicate")[0].returncode == 2
