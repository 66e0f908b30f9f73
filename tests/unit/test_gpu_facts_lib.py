"""Unit tests for plugins/module_utils/gpu/facts.py and the gpu_facts module, on recorded layouts.

Each folder under fixtures/nvidia_smi/ is one host: ``query.xml`` (what
``nvidia-smi -q -x`` printed, in the nvsmi_device_v12.dtd layout) or
``stdout.txt``, ``stderr.txt`` and ``rc`` when it failed, ``topo.txt``
(``nvidia-smi topo -m``) and ``pci.json`` (the host's PCI functions, from
which a sysfs tree is built for the module).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.gpu import facts as lib

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nvidia_smi"
LAYOUTS = sorted(path.name for path in FIXTURES.iterdir() if path.is_dir())


def fixture(layout, name, default=None):
    path = FIXTURES / layout / name
    return path.read_text() if path.exists() else default


def smi_result(layout):
    stdout = fixture(layout, "query.xml") or fixture(layout, "stdout.txt", "")
    return {
        "path": "/usr/bin/nvidia-smi",
        "rc": int(fixture(layout, "rc", "0")),
        "stdout": stdout,
        "stderr": fixture(layout, "stderr.txt", ""),
    }


def pci_devices(layout):
    return json.loads(fixture(layout, "pci.json", "[]"))


def facts_for(layout, **changes):
    arguments = {
        "smi": smi_result(layout),
        "topology_text": fixture(layout, "topo.txt"),
        "pci_devices": pci_devices(layout),
    }
    arguments.update(changes)
    return lib.build_facts(**arguments)


def test_every_recorded_layout_is_covered():
    assert LAYOUTS == [
        "h100_mig",
        "hgx_a100_4x",
        "hgx_h100_8x",
        "hgx_h100_8x_one_lost",
        "hgx_h200_8x",
        "no_driver",
    ]


# ------------------------------------------------------------------ small values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("81559 MiB", 81559),
        ("143771 MiB", 143771),
        (" 40448 MiB ", 40448),
        ("2 GiB", 2048),
        ("1024 KiB", 1),
        ("N/A", None),
        ("", None),
        (None, None),
        ("lots", None),
    ],
)
def test_mib(text, expected):
    assert lib.mib(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Enabled", True),
        ("Disabled", False),
        ("Yes", True),
        ("No", False),
        ("N/A", None),
        ("[N/A]", None),
        (None, None),
        ("Perhaps", None),
    ],
)
def test_enabled(text, expected):
    assert lib.enabled(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00000000:9A:00.0", "0000:9a:00.0"),
        ("0000:9a:00.0", "0000:9a:00.0"),
        ("00000001:1B:02.3", "0001:1b:02.3"),
        ("N/A", None),
    ],
)
def test_pci_address_is_written_as_sysfs_does(text, expected):
    assert lib.pci_address(text) == expected


@pytest.mark.parametrize(
    ("vendor", "klass", "kind"),
    [
        ("0x10de", "0x030200", "gpu"),  # 3D controller (H100, H200, A100 SXM)
        ("0x10de", "0x030000", "gpu"),  # VGA-compatible (PCIe cards with a display engine)
        ("0x10de", "0x068000", "nvswitch"),
        ("0x10de", "0x040300", None),  # HD audio function of a consumer card
        ("0x10de", "0x0c0330", None),  # USB controller of a consumer card
        ("0x1a03", "0x030000", None),  # the BMC's ASPEED VGA
        ("0x15b3", "0x020700", None),  # ConnectX
        ("0X10DE", "0x030200\n", "gpu"),
        (None, None, None),
    ],
)
def test_pci_kind(vendor, klass, kind):
    assert lib.pci_kind(vendor, klass) == kind


# ------------------------------------------------------------ nvidia-smi -q -x


def test_hgx_h100_8x():
    facts = facts_for("hgx_h100_8x")
    assert facts["driver_state"] == "loaded"
    assert (facts["driver_version"], facts["cuda_version"]) == ("580.95.05", "13.0")
    assert facts["count"] == facts["attached_gpus"] == 8
    assert [gpu["index"] for gpu in facts["gpus"]] == list(range(8))
    assert {gpu["name"] for gpu in facts["gpus"]} == {"NVIDIA H100 80GB HBM3"}
    assert {gpu["memory_total_mib"] for gpu in facts["gpus"]} == {81559}
    assert [gpu["pci_bus_id"] for gpu in facts["gpus"]] == [
        "0000:18:00.0",
        "0000:2a:00.0",
        "0000:3a:00.0",
        "0000:5d:00.0",
        "0000:9a:00.0",
        "0000:ab:00.0",
        "0000:ba:00.0",
        "0000:db:00.0",
    ]
    assert len({gpu["uuid"] for gpu in facts["gpus"]}) == 8
    assert all(gpu["uuid"].startswith("GPU-") for gpu in facts["gpus"])
    first = facts["gpus"][0]
    assert first["persistence_mode"] is True
    assert first["ecc"] == {"current": True, "pending": True}
    assert first["mig"] == {"current": False, "pending": False, "devices": []}
    assert first["fabric"] == {
        "state": "Completed",
        "status": "Success",
        "clique_id": "0",
        "cluster_uuid": "00000000-0000-0000-0000-000000000000",
        "bandwidth": "Full",
    }
    assert first["reset_required"] is False
    assert first["recovery_action"] is None
    assert first["remapped_rows"] == {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False}
    # Hopper retires no pages (it remaps rows): every count is N/A.
    assert first["retired_pages"] is None
    assert facts["pci"]["gpu_count"] == 8
    assert facts["pci"]["nvswitch_count"] == 4
    assert facts["nvswitch_present"] is True
    assert {switch["device_id"] for switch in facts["pci"]["nvswitches"]} == {"0x22a3"}
    assert facts["missing_from_driver"] == []
    assert facts["unreachable"] == []
    assert facts["notes"] == []


def test_hgx_h200_8x():
    facts = facts_for("hgx_h200_8x")
    assert facts["driver_version"] == "580.105.08"
    assert facts["count"] == 8
    assert {gpu["name"] for gpu in facts["gpus"]} == {"NVIDIA H200"}
    assert {gpu["memory_total_mib"] for gpu in facts["gpus"]} == {143771}
    assert all(gpu["fabric"]["state"] == "Completed" for gpu in facts["gpus"])
    assert facts["pci"]["gpu_count"] == 8
    assert facts["topology"]["min_nvlinks"] == 18


def test_hgx_a100_4x_has_nvlink_but_no_fabric():
    facts = facts_for("hgx_a100_4x")
    assert (facts["driver_version"], facts["cuda_version"]) == ("550.127.05", "12.4")
    assert facts["count"] == 4
    assert {gpu["name"] for gpu in facts["gpus"]} == {"NVIDIA A100-SXM4-80GB"}
    assert {gpu["memory_total_mib"] for gpu in facts["gpus"]} == {81920}
    # Directly linked GPUs: no NVSwitch, so the fabric block is all N/A.
    assert all(gpu["fabric"] is None for gpu in facts["gpus"])
    assert facts["nvswitch_present"] is False
    assert facts["topology"]["all_pairs_nvlink"] is True
    assert facts["topology"]["min_nvlinks"] == 4


def test_mig_enabled_with_devices_and_a_pending_change():
    facts = facts_for("h100_mig")
    assert facts["driver_version"] == "570.172.08"
    first, second = facts["gpus"]
    assert first["mig"]["current"] is True
    assert first["mig"]["pending"] is True
    assert first["mig"]["devices"] == [
        {
            "index": 0,
            "gpu_instance_id": 1,
            "compute_instance_id": 0,
            "multiprocessor_count": 60,
            "memory_total_mib": 40448,
        },
        {
            "index": 1,
            "gpu_instance_id": 2,
            "compute_instance_id": 0,
            "multiprocessor_count": 60,
            "memory_total_mib": 40448,
        },
    ]
    # MIG switched on but not yet applied: current Disabled, pending Enabled, no devices.
    assert second["mig"] == {"current": False, "pending": True, "devices": []}


def test_one_gpu_fallen_off_the_bus_is_found_through_sysfs():
    facts = facts_for("hgx_h100_8x_one_lost")
    assert facts["driver_state"] == "loaded"
    assert facts["nvidia_smi"]["rc"] == 15
    assert facts["count"] == 7
    assert facts["attached_gpus"] == 8
    assert facts["pci"]["gpu_count"] == 8
    assert facts["missing_from_driver"] == ["0000:9a:00.0"]
    assert facts["unreachable"] == [{"pci_bus_id": "0000:9a:00.0", "reason": "Unknown Error"}]
    assert "nvidia-smi counts 8 GPU(s) but reports 7" in facts["notes"]
    assert "1 of 8 NVIDIA GPU(s) on the PCI bus are not reported by nvidia-smi: 0000:9a:00.0" in facts["notes"]


def test_no_driver_reports_the_pci_gpus_and_says_so():
    facts = facts_for("no_driver", topology_text=None)
    assert facts["driver_state"] == "unreachable"
    assert facts["gpus"] == []
    assert facts["count"] == 0
    assert facts["pci"]["gpu_count"] == 8
    assert {gpu["driver"] for gpu in facts["pci"]["gpus"]} == {None}
    assert facts["nvidia_smi"]["error"].startswith("NVIDIA-SMI has failed because it couldn't communicate")
    # Without a driver nothing can be "missing from" it.
    assert facts["missing_from_driver"] == []
    assert facts["notes"][0].startswith("nvidia-smi cannot reach the NVIDIA driver")


def test_nvidia_smi_absent_with_gpus_on_the_bus():
    facts = lib.build_facts(smi=None, pci_devices=pci_devices("no_driver"))
    assert facts["driver_state"] == "absent"
    assert facts["nvidia_smi"] == {"path": None, "rc": None, "error": None}
    assert facts["gpus"] == []
    assert facts["notes"] == [
        "8 NVIDIA GPU(s) on the PCI bus but nvidia-smi is not installed: the NVIDIA driver is missing"
    ]


def test_no_gpu_at_all_is_an_empty_list_not_an_error():
    facts = lib.build_facts(smi=None, pci_devices=[])
    assert facts["driver_state"] == "absent"
    assert facts["gpus"] == []
    assert facts["count"] == 0
    assert facts["pci"] == {"gpus": [], "nvswitches": [], "gpu_count": 0, "nvswitch_count": 0}
    assert facts["nvswitch_present"] is False
    assert facts["notes"] == ["no NVIDIA GPU on the PCI bus"]


def test_no_devices_found():
    smi = {"path": "/usr/bin/nvidia-smi", "rc": 6, "stdout": "No devices were found\n", "stderr": ""}
    facts = lib.build_facts(smi=smi, pci_devices=[])
    assert facts["driver_state"] == "no_devices"
    assert facts["nvidia_smi"]["error"] == "No devices were found"


def test_driver_library_mismatch_is_unreachable():
    smi = {
        "path": "/usr/bin/nvidia-smi",
        "rc": 18,
        "stdout": "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.95\n",
        "stderr": "",
    }
    facts = lib.build_facts(smi=smi, pci_devices=pci_devices("hgx_h100_8x"))
    assert facts["driver_state"] == "unreachable"
    assert facts["nvidia_smi"]["error"] == "Failed to initialize NVML: Driver/library version mismatch"


def test_unparsable_output_is_an_error_state_not_an_exception():
    smi = {"path": "/usr/bin/nvidia-smi", "rc": 0, "stdout": "<nvidia_smi_log><gpu>", "stderr": ""}
    facts = lib.build_facts(smi=smi, pci_devices=[])
    assert facts["driver_state"] == "error"
    assert "did not print valid XML" in facts["nvidia_smi"]["error"]


def test_gpu_requiring_a_reset_and_a_pending_remap():
    xml = fixture("hgx_h100_8x", "query.xml")
    first_gpu_end = xml.index("</gpu>")
    head, tail = xml[:first_gpu_end], xml[first_gpu_end:]
    head = head.replace("<reset_required>No</reset_required>", "<reset_required>Yes</reset_required>")
    head = head.replace(
        "<remapped_row_pending>No</remapped_row_pending>", "<remapped_row_pending>Yes</remapped_row_pending>"
    )
    gpus = lib.parse_query_xml(head + tail)["gpus"]
    assert gpus[0]["reset_required"] is True
    assert gpus[0]["remapped_rows"]["pending"] is True
    assert gpus[1]["reset_required"] is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "printed nothing"),
        ("<nvidia_smi_log>", "did not print valid XML"),
        ("<html></html>", "printed <html>, not <nvidia_smi_log>"),
    ],
)
def test_parse_query_xml_refuses_what_is_not_a_log(text, message):
    with pytest.raises(ValueError, match=message):
        lib.parse_query_xml(text)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Unable to determine the device handle for GPU0000:9A:00.0: Unknown Error",
            [{"pci_bus_id": "0000:9a:00.0", "reason": "Unknown Error"}],
        ),
        (
            "Unable to determine the device handle for GPU 0000:02:00.0: GPU is lost.  Reboot the system to "
            "recover this GPU",
            [{"pci_bus_id": "0000:02:00.0", "reason": "GPU is lost. Reboot the system to recover this GPU"}],
        ),
        ("All done.", []),
    ],
)
def test_handle_errors(line, expected):
    assert lib.handle_errors(line) == expected


# ------------------------------------------------------------------ topology


def test_topology_h100_nv18_all_to_all():
    topology = lib.parse_topology(fixture("hgx_h100_8x", "topo.txt"))
    assert topology["gpus"] == [f"GPU{i}" for i in range(8)]
    assert topology["links"]["GPU0"]["GPU7"] == "NV18"
    assert "GPU0" not in topology["links"]["GPU0"]
    assert topology["pairs"] == 28
    assert topology["nvlink_pairs"] == 28
    assert topology["min_nvlinks"] == 18
    assert topology["all_pairs_nvlink"] is True
    assert topology["cpu_affinity"]["GPU0"] == "0-55,112-167"
    assert topology["numa_affinity"]["GPU7"] == "1"


def test_topology_with_terminal_escapes_and_pcie_only_pairs():
    text = (
        "\t\x1b[4mGPU0\tGPU1\tGPU2\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
        "GPU0\t X \tNV12\tSYS\t0-31\t0\t\tN/A\n"
        "GPU1\tNV12\t X \tSYS\t0-31\t0\t\tN/A\n"
        "GPU2\tSYS\tSYS\t X \t32-63\t1\t\tN/A\n"
        "\nLegend:\n"
    )
    topology = lib.parse_topology(text)
    assert topology["gpus"] == ["GPU0", "GPU1", "GPU2"]
    assert topology["nvlink_pairs"] == 1
    assert topology["pairs"] == 3
    assert topology["min_nvlinks"] == 0
    assert topology["all_pairs_nvlink"] is False


def test_topology_of_nothing():
    assert lib.parse_topology("") is None
    assert lib.parse_topology("No devices were found") is None


# --------------------------------------------------------------------- sysfs


def make_sysfs(root, devices, modules=None):
    """A sysfs tree under ROOT with the given PCI functions (and driver links) and kernel modules."""
    base = root / "bus" / "pci" / "devices"
    base.mkdir(parents=True)
    drivers = root / "bus" / "pci" / "drivers"
    for device in devices:
        path = base / device["address"]
        path.mkdir()
        for name in ("vendor", "device", "class"):
            (path / name).write_text(device[name] + "\n")
        if device["driver"]:
            (drivers / device["driver"]).mkdir(parents=True, exist_ok=True)
            os.symlink(drivers / device["driver"], path / "driver")
    for name, version in (modules or {}).items():
        (root / "module" / name).mkdir(parents=True)
        if version:
            (root / "module" / name / "version").write_text(version + "\n")
    return root


def test_read_pci_devices_from_a_tree(tmp_path):
    root = make_sysfs(tmp_path, pci_devices("hgx_h100_8x"))
    devices = lib.read_pci_devices(str(root))
    assert len(devices) == len(pci_devices("hgx_h100_8x"))
    classified = lib.classify_pci(devices)
    assert len(classified["gpus"]) == 8
    assert len(classified["nvswitches"]) == 4
    assert classified["gpus"][0] == {
        "address": "0000:18:00.0",
        "device_id": "0x2330",
        "class": "0x030200",
        "driver": "nvidia",
    }
    assert {switch["driver"] for switch in classified["nvswitches"]} == {"nvidia-nvswitch"}


def test_read_pci_devices_without_sysfs(tmp_path):
    assert lib.read_pci_devices(str(tmp_path / "nowhere")) == []


def test_read_kernel_modules(tmp_path):
    root = make_sysfs(tmp_path, [], modules={"nvidia": "580.95.05", "nouveau": None})
    assert lib.read_kernel_modules(str(root)) == {
        "nvidia_loaded": True,
        "nvidia_version": "580.95.05",
        "nouveau_loaded": True,
    }
    assert lib.read_kernel_modules(str(tmp_path / "none")) == {
        "nvidia_loaded": False,
        "nvidia_version": None,
        "nouveau_loaded": False,
    }


# ---------------------------------------------------------- the module itself


def fake_nvidia_smi(directory, layout):
    """A stand-in nvidia-smi that prints the layout's recording for -q -x and topo -m."""
    query = FIXTURES / layout / ("query.xml" if (FIXTURES / layout / "query.xml").exists() else "stdout.txt")
    topo = FIXTURES / layout / "topo.txt"
    stderr = FIXTURES / layout / "stderr.txt"
    rc = fixture(layout, "rc", "0").strip()
    script = directory / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = topo ]; then cat "{topo}" 2>/dev/null; exit 0; fi\n'
        f'cat "{query}"\n' + (f'cat "{stderr}" >&2\n' if stderr.exists() else "") + f"exit {rc}\n"
    )
    script.chmod(0o755)
    return script


def run_module(tmp_path, layout, with_smi=True, devices=None):
    devices = pci_devices(layout) if devices is None else devices
    root = make_sysfs(tmp_path / "sys", devices, modules={"nvidia": "580.95.05"} if with_smi else None)
    args = f"sysfs_root={root} nvidia_smi={fake_nvidia_smi(tmp_path, layout) if with_smi else tmp_path / 'none'}"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "1",
        # Only the stand-in: the module looks nvidia-smi up in the PATH when the given path is missing.
        "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin",
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "-c",
            "local",
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-m",
            "enclave.llm.gpu_facts",
            "-a",
            args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


@pytest.mark.skipif(not (Path(sys.executable).parent / "ansible").exists(), reason="ansible is not in this venv")
def test_module_reports_hgx_h100(tmp_path):
    result = run_module(tmp_path, "hgx_h100_8x")
    facts = result["ansible_facts"]["enclave_gpus"]
    assert result["changed"] is False
    assert facts["count"] == 8
    assert facts["kernel_module"]["nvidia_version"] == "580.95.05"
    assert facts["topology"]["min_nvlinks"] == 18
    assert [command.split()[-2:] for command in result["commands"]] == [["-q", "-x"], ["topo", "-m"]]


@pytest.mark.skipif(not (Path(sys.executable).parent / "ansible").exists(), reason="ansible is not in this venv")
def test_module_reports_a_lost_gpu_without_failing(tmp_path):
    facts = run_module(tmp_path, "hgx_h100_8x_one_lost")["ansible_facts"]["enclave_gpus"]
    assert facts["count"] == 7
    assert facts["missing_from_driver"] == ["0000:9a:00.0"]


NO_REAL_NVIDIA_SMI = pytest.mark.skipif(
    shutil.which("nvidia-smi", path="/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin:/usr/local/sbin") is not None,
    reason="this host has a real nvidia-smi, which the module would find",
)


@NO_REAL_NVIDIA_SMI
@pytest.mark.skipif(not (Path(sys.executable).parent / "ansible").exists(), reason="ansible is not in this venv")
def test_module_without_nvidia_smi_reports_the_bus(tmp_path):
    result = run_module(tmp_path, "no_driver", with_smi=False)
    facts = result["ansible_facts"]["enclave_gpus"]
    assert facts["driver_state"] == "absent"
    assert facts["pci"]["gpu_count"] == 8
    assert facts["gpus"] == []
    assert result["commands"] == []


@NO_REAL_NVIDIA_SMI
@pytest.mark.skipif(not (Path(sys.executable).parent / "ansible").exists(), reason="ansible is not in this venv")
def test_module_on_a_host_without_gpus(tmp_path):
    others = [device for device in pci_devices("hgx_h100_8x") if device["vendor"] != "0x10de"]
    facts = run_module(tmp_path, "no_driver", with_smi=False, devices=others)["ansible_facts"]["enclave_gpus"]
    assert facts["gpus"] == []
    assert facts["pci"]["gpu_count"] == 0
    assert facts["notes"] == ["no NVIDIA GPU on the PCI bus"]
