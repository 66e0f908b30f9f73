"""Unit tests for plugins/module_utils/gpu/nvidia.py (no host, no GPU).

The verification tests run on the facts that gpu_facts builds from the
recorded layouts in fixtures/nvidia_smi/, so a parser change that loses a
field shows up here too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.gpu import facts as gpu_facts
from ansible_collections.enclave.llm.plugins.module_utils.gpu import nvidia as lib

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nvidia_smi"


def facts_for(layout):
    folder = FIXTURES / layout
    stdout = (folder / "query.xml").read_text() if (folder / "query.xml").exists() else ""
    if not stdout and (folder / "stdout.txt").exists():
        stdout = (folder / "stdout.txt").read_text()
    smi = {
        "path": "/usr/bin/nvidia-smi",
        "rc": int((folder / "rc").read_text()) if (folder / "rc").exists() else 0,
        "stdout": stdout,
        "stderr": (folder / "stderr.txt").read_text() if (folder / "stderr.txt").exists() else "",
    }
    topology = (folder / "topo.txt").read_text() if (folder / "topo.txt").exists() else None
    return gpu_facts.build_facts(smi, topology, json.loads((folder / "pci.json").read_text()))


# -------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("580.95.05", "580.105.08", -1),  # as text "580.95.05" > "580.105.08"
        ("580.105.08", "580.95.05", 1),
        ("580.95.05", "580.95.05", 0),
        ("580.95.5", "580.95.05", 0),
        ("1.18", "1.18.0", 0),
        ("1.9.0", "1.18.0", -1),
        ("1.18.2", "1.18.10", -1),
        ("570.172.08", "580.65.06", -1),
    ],
)
def test_versions_compare_as_versions_not_strings(first, second, expected):
    assert lib.compare_versions(first, second) == expected


@pytest.mark.parametrize("value", ["", None, "580", "abc", "580.95.05-1", "1.18.0~rc.1", "v1.18.0", True, "580..05"])
def test_parse_version_refuses_what_is_not_dotted_numbers(value):
    if value == "580":
        assert lib.parse_version(value) == (580,)
        return
    with pytest.raises(ValueError, match="is not a version"):
        lib.parse_version(value)


@pytest.mark.parametrize(
    ("package_version", "upstream"),
    [
        ("580.95.05-1", "580.95.05"),
        ("1:580.95.05-1", "580.95.05"),
        ("3:580.95.05-1.el9", "580.95.05"),
        ("580.95.05-0ubuntu0.24.04.2", "580.95.05"),
        ("1.18.2-1", "1.18.2"),
        ("1.18.2", "1.18.2"),
        ("1.18.0~rc.1-1", None),
        (None, None),
        ("", None),
    ],
)
def test_upstream_version(package_version, upstream):
    assert lib.upstream_version(package_version) == upstream


def test_sort_versions_newest_last():
    assert lib.sort_versions(["580.105.08-1", "580.65.06-1", "580.95.05-1", "junk"]) == [
        "580.65.06-1",
        "580.95.05-1",
        "580.105.08-1",
        "junk",
    ]


def test_driver_branch():
    assert lib.driver_branch("580.105.08") == "580"


# ---------------------------------------------------------------- role inputs


def inputs(**changes):
    data = {
        "expected_count": 8,
        "driver_branch_value": "580",
        "driver_version": "580.105.08",
        "container_toolkit_version": "1.18.2",
        "fabric_manager": "auto",
        "fabric_manager_version": None,
        "kernel_modules": "open",
        "kernel_module_build": "dkms",
        "supported_builds": ["open-dkms", "proprietary-dkms"],
        "packages_overridden": False,
        "distribution": "Debian",
    }
    data.update(changes)
    return lib.input_problems(**data)


def test_good_inputs():
    assert inputs() == []
    assert inputs(expected_count=0) == []
    assert inputs(fabric_manager_version="580.105.08") == []
    assert inputs(container_toolkit_version="1.18") == []
    assert inputs(expected_count="8") == []  # -e nvidia_gpu_expected_count=8


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"expected_count": None}, "nvidia_gpu_expected_count is None: set it", id="count-unset"),
        pytest.param({"expected_count": -1}, "cannot be negative", id="count-negative"),
        pytest.param({"expected_count": True}, "nvidia_gpu_expected_count is True", id="count-bool"),
        pytest.param({"expected_count": "eight"}, "nvidia_gpu_expected_count is 'eight'", id="count-text"),
        pytest.param(
            {"driver_branch_value": "r580"}, "nvidia_gpu_driver_branch 'r580' is not a driver branch", id="branch"
        ),
        pytest.param({"driver_version": "580.95"}, "'580.95' is not an exact driver version", id="two-parts"),
        pytest.param({"driver_version": "latest"}, "'latest' is not an exact driver version", id="latest"),
        pytest.param(
            {"driver_version": "570.172.08"},
            "nvidia_gpu_driver_version 570.172.08 is on branch 570, not on nvidia_gpu_driver_branch 580",
            id="other-branch",
        ),
        pytest.param(
            {"container_toolkit_version": "1.17.8"},
            "nvidia_gpu_container_toolkit_version 1.17.8 is older than 1.18.0",
            id="toolkit-old",
        ),
        pytest.param(
            {"container_toolkit_version": "1.9.0"},
            "nvidia_gpu_container_toolkit_version 1.9.0 is older than 1.18.0",
            id="toolkit-old-as-text-newer",
        ),
        pytest.param({"container_toolkit_version": "v1.18"}, "'v1.18' is not a version", id="toolkit-malformed"),
        pytest.param(
            {"fabric_manager_version": "580.95.05"},
            "fabric manager 580.95.05 does not equal the driver 580.105.08",
            id="fabric-manager-mismatch",
        ),
        pytest.param({"fabric_manager_version": "new"}, "'new' is not a version", id="fabric-manager-malformed"),
        pytest.param({"fabric_manager": "yes"}, "nvidia_gpu_fabric_manager 'yes' is not one of", id="fm-mode"),
        pytest.param({"kernel_modules": "nouveau"}, "'nouveau' is not one of open, proprietary", id="modules"),
        pytest.param({"kernel_module_build": "akmods"}, "'akmods' is not one of dkms, precompiled", id="build"),
        pytest.param(
            {"kernel_module_build": "precompiled"},
            "open kernel modules built by precompiled are not offered for Debian (NVIDIA's repository has: open "
            "modules built by dkms, proprietary modules built by dkms)",
            id="precompiled-on-debian",
        ),
    ],
)
def test_bad_inputs_each_get_a_clear_message(changes, expected):
    problems = inputs(**changes)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_precompiled_accepted_where_offered_or_when_packages_are_named():
    rhel = ["open-dkms", "proprietary-dkms", "proprietary-precompiled"]
    assert inputs(kernel_modules="proprietary", kernel_module_build="precompiled", supported_builds=rhel) == []
    assert inputs(kernel_module_build="precompiled", packages_overridden=True) == []


def test_every_bad_input_is_reported_at_once():
    problems = inputs(expected_count=None, driver_version="580.95", container_toolkit_version="1.17.0")
    assert len(problems) == 3


@pytest.mark.parametrize(
    ("driver", "installed", "expected"),
    [
        ("580.105.08", "580.105.08-1", []),
        ("580.105.08", "1:580.105.08-1", []),
        ("580.105.08", "", []),
        ("580.105.08", "580.95.05-1", ["fabric manager 580.95.05-1 does not equal the driver 580.105.08"]),
    ],
)
def test_fabric_manager_problems(driver, installed, expected):
    problems = lib.fabric_manager_problems(driver, installed)
    assert [problem.split(":", maxsplit=1)[0] for problem in problems] == expected


@pytest.mark.parametrize(
    ("mode", "switches", "wanted"),
    [("auto", 4, True), ("auto", 0, False), ("enabled", 0, True), ("disabled", 4, False), ("auto", None, False)],
)
def test_fabric_manager_wanted(mode, switches, wanted):
    assert lib.fabric_manager_wanted(mode, switches) is wanted


def test_pci_count_problems():
    assert lib.pci_count_problems(8, 8) == []
    assert lib.pci_count_problems(0, 0) == []
    (fewer,) = lib.pci_count_problems(8, 7)
    assert fewer.startswith("nvidia_gpu_expected_count is 8 but the PCI bus shows 7 NVIDIA GPU(s): 1 missing.")
    assert "Nothing was changed." in fewer
    (more,) = lib.pci_count_problems(0, 8)
    assert "Set nvidia_gpu_expected_count to 8" in more


# ------------------------------------------------------ repository versions

MADISON = """\
nvidia-driver-cuda | 580.105.08-1 | http://198.51.100.10/nvidia/cuda/debian12/x86_64  Packages
nvidia-driver-cuda | 580.95.05-1 | http://198.51.100.10/nvidia/cuda/debian12/x86_64  Packages
nvidia-driver-cuda | 580.65.06-1 | http://198.51.100.10/nvidia/cuda/debian12/x86_64  Packages
nvidia-kernel-open-dkms | 580.105.08-1 | http://198.51.100.10/nvidia/cuda/debian12/x86_64  Packages
nvidia-kernel-open-dkms | 580.95.05-1 | http://198.51.100.10/nvidia/cuda/debian12/x86_64  Packages
nvidia-container-toolkit-base | 1.18.2-1 | http://198.51.100.10/nvidia/libnvidia-container/stable/deb/amd64  Packages
nvidia-container-toolkit-base | 1.17.8-1 | http://198.51.100.10/nvidia/libnvidia-container/stable/deb/amd64  Packages
"""

DNF_MODULE_INFO = """\
Name             : nvidia-driver
Stream           : 580-open
Version          : 920251020134623
Context          : 97a4bd10
Architecture     : x86_64
Profiles         : default [d], fm, ks, src
Default profiles : default
Repo             : cuda-rhel9-x86_64
Summary          : Nvidia driver for 580-open branch
Description      : This branch includes the open GPU kernel modules: driver version 580.95.05
Requires         :
Artifacts        : kmod-nvidia-open-dkms-3:580.95.05-1.el9.x86_64
                 : nvidia-driver-cuda-3:580.95.05-1.el9.x86_64
                 : nvidia-fabricmanager-3:580.95.05-1.el9.x86_64
                 : nvidia-persistenced-3:580.95.05-1.el9.x86_64

Name             : nvidia-driver
Stream           : 580-open
Version          : 920251120100512
Context          : 97a4bd10
Architecture     : x86_64
Profiles         : default [d], fm, ks, src
Default profiles : default
Repo             : cuda-rhel9-x86_64
Summary          : Nvidia driver for 580-open branch
Description      : This branch includes the open GPU kernel modules: driver version 580.105.08
Requires         :
Artifacts        : kmod-nvidia-open-dkms-3:580.105.08-1.el9.x86_64
                 : nvidia-driver-cuda-3:580.105.08-1.el9.x86_64
                 : nvidia-fabricmanager-3:580.105.08-1.el9.x86_64
                 : nvidia-persistenced-3:580.105.08-1.el9.x86_64

Hint: [d]efault, [e]nabled, [x]disabled, [i]nstalled, [a]ctive
"""

DNF_LIST = """\
Available Packages
nvidia-container-toolkit-base.x86_64            1.17.8-1            nvidia-container-toolkit
nvidia-container-toolkit-base.x86_64            1.18.2-1            nvidia-container-toolkit
"""


def test_parse_apt_madison():
    available = lib.parse_apt_madison(MADISON)
    assert available["nvidia-driver-cuda"] == ["580.105.08-1", "580.95.05-1", "580.65.06-1"]
    assert available["nvidia-container-toolkit-base"] == ["1.18.2-1", "1.17.8-1"]
    assert lib.parse_apt_madison("N: Unable to locate package nvidia-driver-cuda\n") == {}


def test_parse_dnf_module_artifacts():
    available = lib.parse_dnf_module_artifacts(DNF_MODULE_INFO)
    assert available["kmod-nvidia-open-dkms"] == ["3:580.95.05-1.el9", "3:580.105.08-1.el9"]
    assert available["nvidia-fabricmanager"] == ["3:580.95.05-1.el9", "3:580.105.08-1.el9"]
    assert "Description" not in available


def test_parse_dnf_list():
    assert lib.parse_dnf_list(DNF_LIST) == {"nvidia-container-toolkit-base": ["1.17.8-1", "1.18.2-1"]}


@pytest.mark.parametrize(
    ("text", "stream", "enabled"),
    [
        ("nvidia-driver   580-open [e]   default [d], fm, ks   Nvidia driver for 580-open branch", "580-open", True),
        ("nvidia-driver   580-open [d][e]   default [d]   Nvidia driver", "580-open", True),
        ("nvidia-driver   580-dkms [e]   default [d]   Nvidia driver", "580-open", False),
        ("nvidia-driver   580-open   default [d], fm   Nvidia driver", "580-open", False),
        ("", "580-open", False),
    ],
)
def test_dnf_stream_enabled(text, stream, enabled):
    assert lib.dnf_stream_enabled(text, "nvidia-driver", stream) is enabled


def test_select_versions_picks_the_pinned_upstream_version():
    wanted = {"nvidia-driver-cuda": "580.105.08", "nvidia-kernel-open-dkms": "580.105.08"}
    result = lib.select_versions(wanted, lib.parse_apt_madison(MADISON))
    assert result == {
        "versions": {"nvidia-driver-cuda": "580.105.08-1", "nvidia-kernel-open-dkms": "580.105.08-1"},
        "problems": [],
    }
    assert lib.package_specs(result["versions"], "apt") == [
        "nvidia-driver-cuda=580.105.08-1",
        "nvidia-kernel-open-dkms=580.105.08-1",
    ]


def test_select_versions_on_rhel_drops_the_epoch_from_the_spec():
    wanted = {"nvidia-driver-cuda": "580.105.08", "nvidia-container-toolkit-base": "1.18.2"}
    available = lib.merge_versions(lib.parse_dnf_module_artifacts(DNF_MODULE_INFO), lib.parse_dnf_list(DNF_LIST))
    result = lib.select_versions(wanted, available)
    assert result["problems"] == []
    assert lib.package_specs(result["versions"], "dnf") == [
        "nvidia-driver-cuda-580.105.08-1.el9",
        "nvidia-container-toolkit-base-1.18.2-1",
    ]


def test_a_version_missing_from_the_mirror_lists_what_is_there():
    result = lib.select_versions({"nvidia-driver-cuda": "580.82.07"}, lib.parse_apt_madison(MADISON))
    assert result["versions"] == {}
    assert result["problems"] == [
        "nvidia-driver-cuda 580.82.07 is not in the configured package repositories; available: "
        "580.65.06-1, 580.95.05-1, 580.105.08-1. Mirror that version, or pin one of these."
    ]


def test_packages_missing_from_the_mirror_say_which_repository_to_mirror():
    wanted = {"nvidia-fabricmanager-580": "580.105.08", "libnvidia-nscq-580": "580.105.08"}
    assert lib.select_versions(wanted, lib.parse_apt_madison(MADISON))["problems"] == [
        "nvidia-fabricmanager-580, libnvidia-nscq-580 are not in the configured package repositories at all: "
        "mirror NVIDIA's repository for this distribution (the CUDA repository for the driver and the fabric "
        "manager, libnvidia-container for the toolkit) and check the package names."
    ]


def test_installed_versions_count_as_available():
    packages = {
        "nvidia-driver-cuda": [{"version": "580.82.07-1", "arch": "amd64", "source": "apt"}],
        "kmod-nvidia-open-dkms": [{"version": "580.105.08", "release": "1.el9", "epoch": 3, "source": "rpm"}],
    }
    installed = lib.installed_versions(packages, ["nvidia-driver-cuda", "kmod-nvidia-open-dkms", "absent"])
    assert installed == {"nvidia-driver-cuda": ["580.82.07-1"], "kmod-nvidia-open-dkms": ["3:580.105.08-1.el9"]}
    merged = lib.merge_versions(lib.parse_apt_madison(MADISON), installed)
    assert lib.select_versions({"nvidia-driver-cuda": "580.82.07"}, merged)["versions"] == {
        "nvidia-driver-cuda": "580.82.07-1"
    }
    assert lib.all_installed(packages, {"nvidia-driver-cuda": "580.82.07-1"}) is True
    assert lib.all_installed(packages, {"nvidia-driver-cuda": "580.105.08-1"}) is False


def test_expand_packages():
    assert lib.expand_packages(["nvidia-fabricmanager-{branch}", "libnvidia-nscq-{branch}"], "580") == [
        "nvidia-fabricmanager-580",
        "libnvidia-nscq-580",
    ]
    assert lib.expand_packages(None, "580") == []


# ----------------------------------------------------------------- reboot


def test_reboot_reasons():
    running = {"kernel_module": {"nvidia_loaded": True, "nvidia_version": "580.105.08", "nouveau_loaded": False}}
    assert lib.reboot_reasons(running, "580.105.08") == []
    assert lib.reboot_reasons(running, "580.126.09") == [
        "the kernel runs NVIDIA module 580.105.08, the pinned driver is 580.126.09"
    ]
    fresh = {"kernel_module": {"nvidia_loaded": False, "nvidia_version": None, "nouveau_loaded": True}}
    assert lib.reboot_reasons(fresh, "580.105.08") == [
        "the nouveau module is loaded and must give way to the NVIDIA driver",
        "the NVIDIA kernel module is not loaded (driver 580.105.08 installed)",
    ]


# -------------------------------------------------------------- verification


def verify(facts, **changes):
    arguments = {"expected_count": 8, "driver_version": "580.95.05", "ecc": True, "mig": False}
    arguments.update(changes)
    return lib.verify_problems(facts, **arguments)


def test_a_healthy_hgx_h100_passes():
    assert verify(facts_for("hgx_h100_8x")) == []


def test_a_healthy_h200_and_a100_pass():
    assert verify(facts_for("hgx_h200_8x"), driver_version="580.105.08") == []
    assert verify(facts_for("hgx_a100_4x"), expected_count=4, driver_version="550.127.05") == []


def test_no_gpu_expected_none_present():
    facts = gpu_facts.build_facts(smi=None, pci_devices=[])
    assert lib.verify_problems(facts, 0, "580.95.05") == []


def test_a_gpu_fallen_off_the_bus_is_a_problem():
    problems = verify(facts_for("hgx_h100_8x_one_lost"))
    assert "expected 8 GPU(s) in nvidia-smi, it reports 7." in problems
    assert any(problem.startswith("GPU 0000:9a:00.0 is on the PCI bus but not in nvidia-smi") for problem in problems)
    assert "nvidia-smi cannot open GPU 0000:9a:00.0: Unknown Error." in problems


def test_no_driver_is_one_problem_with_the_reason():
    (problem,) = verify(facts_for("no_driver"))
    assert problem.startswith("nvidia-smi does not work (driver state unreachable: NVIDIA-SMI has failed")


def test_other_driver_version():
    (problem,) = verify(facts_for("hgx_h100_8x"), driver_version="580.105.08")
    assert problem.startswith("driver 580.95.05 is running, nvidia_gpu_driver_version pins 580.105.08")


def test_mig_not_as_configured():
    facts = facts_for("h100_mig")
    problems = verify(facts, expected_count=2, driver_version="570.172.08", mig=False)
    assert problems[0].startswith("GPU 0 (0000:18:00.0): MIG is enabled, wanted disabled.")
    assert problems[1] == "GPU 1 (0000:2a:00.0): MIG is enabled pending the next reset, wanted disabled."
    problems = verify(facts, expected_count=2, driver_version="570.172.08", mig=True)
    assert problems == [
        "GPU 1 (0000:2a:00.0): MIG is disabled, wanted enabled (pending after a reset). Change it with "
        "`nvidia-smi -i 1 -mig 1` and reset the GPU."
    ]
    assert verify(facts, expected_count=2, driver_version="570.172.08", mig=None) == []


def degraded(layout="hgx_h100_8x"):
    facts = copy.deepcopy(facts_for(layout))
    gpu = facts["gpus"][3]
    gpu["persistence_mode"] = False
    gpu["ecc"] = {"current": False, "pending": True}
    gpu["reset_required"] = True
    gpu["remapped_rows"]["pending"] = True
    gpu["fabric"] = {"state": "In Progress", "status": None, "clique_id": None, "cluster_uuid": None, "bandwidth": None}
    return facts


def test_each_degraded_state_has_its_message():
    problems = verify(degraded())
    label = "GPU 3 (0000:5d:00.0)"
    assert problems == [
        f"{label}: persistence mode is disabled: nvidia-persistenced must run (systemctl status nvidia-persistenced).",
        f"{label}: ECC is disabled, wanted enabled (pending after a reset). Change it with `nvidia-smi -i 3 -e 1` "
        "and reboot.",
        f"{label}: the GPU requires a reset (nvidia-smi -r -i 3, or reboot).",
        f"{label}: a row remap is pending: reset the GPU (or reboot) to apply it.",
        f"{label}: NVSwitch fabric state In Progress, status None (wanted Completed, Success): "
        "nvidia-fabricmanager must run at the driver's version.",
    ]


def test_checks_that_are_switched_off():
    assert verify(degraded(), ecc=None, persistence=False, fabric=False) == [
        "GPU 3 (0000:5d:00.0): the GPU requires a reset (nvidia-smi -r -i 3, or reboot).",
        "GPU 3 (0000:5d:00.0): a row remap is pending: reset the GPU (or reboot) to apply it.",
    ]


def test_pci_count_is_checked_again_after_installation():
    assert verify(facts_for("hgx_h100_8x"), expected_count=4)[0] == (
        "expected 4 NVIDIA GPU(s) on the PCI bus, found 8."
    )


# ------------------------------------------------------------ model profiles

R1_8XH200 = {
    "name": "deepseek-r1-fp8-8xh200",
    "gpu_count": 8,
    "gpu_memory_mib_min": 140000,
    "tensor_parallel": 8,
    "pipeline_parallel": 1,
    "nodes": 1,
}
R1_16XH100 = {
    "name": "deepseek-r1-fp8-16xh100",
    "gpu_count": 16,
    "gpu_memory_mib_min": 80000,
    "tensor_parallel": 8,
    "pipeline_parallel": 2,
    "nodes": 2,
}
DISTILL_70B = {
    "name": "deepseek-r1-distill-llama-70b",
    "gpu_count": 2,
    "gpu_memory_mib_min": 80000,
    "tensor_parallel": 2,
    "pipeline_parallel": 1,
}


def test_profiles_that_fit():
    assert lib.profile_fits(R1_8XH200, facts_for("hgx_h200_8x")) == []
    assert lib.profile_fits(R1_16XH100, facts_for("hgx_h100_8x")) == []
    assert lib.profile_fits(DISTILL_70B, facts_for("hgx_a100_4x")["gpus"]) == []


def test_profile_too_big_for_the_host_names_the_numbers():
    assert lib.profile_fits(R1_8XH200, facts_for("hgx_a100_4x")) == [
        "profile deepseek-r1-fp8-8xh200 needs 8 GPUs with >= 140000 MiB each; this host has 4 GPUs of 81920 MiB."
    ]
    assert lib.profile_fits(R1_8XH200, facts_for("hgx_h100_8x")) == [
        "profile deepseek-r1-fp8-8xh200 needs 8 GPUs with >= 140000 MiB each; this host has 8 GPUs of 81559 MiB."
    ]


def test_profile_on_a_host_missing_a_gpu():
    assert lib.profile_fits(R1_16XH100, facts_for("hgx_h100_8x_one_lost")) == [
        "profile deepseek-r1-fp8-16xh100 needs 8 GPUs on each of 2 nodes with >= 80000 MiB each; "
        "this host has 7 GPUs of 81559 MiB."
    ]


def test_profile_on_a_host_without_gpus():
    assert lib.profile_fits(DISTILL_70B, {"gpus": []}) == [
        "profile deepseek-r1-distill-llama-70b needs 2 GPUs with >= 80000 MiB each; this host has no GPU."
    ]


def test_gpus_in_mig_mode_do_not_count():
    assert lib.profile_fits(DISTILL_70B, facts_for("h100_mig")) == [
        "profile deepseek-r1-distill-llama-70b needs 2 GPUs with >= 80000 MiB each; this host has 2 GPUs of "
        "81559 MiB (1 in MIG mode, which do not count)."
    ]


def test_mixed_gpus_are_described_by_size():
    gpus = [{"memory_total_mib": 81559}, {"memory_total_mib": 81559}, {"memory_total_mib": 40960}]
    (problem,) = lib.profile_fits(R1_8XH200, gpus)
    assert problem.endswith("this host has 3 GPUs: 2 of 81559 MiB, 1 of 40960 MiB.")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tensor_parallel": 4}, "tensor_parallel 4 x pipeline_parallel 1 = 4, but gpu_count is 8"),
        ({"gpu_count": 0}, "gpu_count must be a whole number of at least 1, got 0"),
        ({"gpu_memory_mib_min": "lots"}, "gpu_memory_mib_min must be a whole number of at least 1, got 'lots'"),
        ({"nodes": 3}, "gpu_count 8 does not divide evenly over 3 nodes"),
    ],
)
def test_malformed_profiles(changes, expected):
    profile = {**R1_8XH200, **changes}
    problems = lib.profile_fits(profile, facts_for("hgx_h200_8x"))
    assert any(expected in problem for problem in problems), problems


# ----------------------------------------------------------------------- CDI

CDI_LIST_8 = "INFO[0000] Found 10 CDI devices\n" + "".join(f"nvidia.com/gpu={i}\n" for i in range(8))
CDI_LIST_8 += "nvidia.com/gpu=GPU-bdd640fb-0667-4ad1-9c80-317fa3b1799d\nnvidia.com/gpu=all\n"


def test_cdi_spec_names_every_gpu():
    assert lib.cdi_problems(CDI_LIST_8, 8, "/var/run/cdi/nvidia.yaml") == []
    assert lib.cdi_device_names(CDI_LIST_8)[0] == "nvidia.com/gpu=0"


def test_cdi_spec_problems():
    assert lib.cdi_problems("", 8, "/var/run/cdi/nvidia.yaml")[0].startswith(
        "the CDI spec /var/run/cdi/nvidia.yaml lists no nvidia.com/gpu device"
    )
    seven = "".join(f"nvidia.com/gpu={i}\n" for i in range(7)) + "nvidia.com/gpu=all\n"
    assert lib.cdi_problems(seven, 8, "/var/run/cdi/nvidia.yaml") == [
        "the CDI spec /var/run/cdi/nvidia.yaml names 7 GPU(s) (nvidia.com/gpu=N), expected 8: regenerate it after "
        "every GPU is visible to nvidia-smi."
    ]
    without_all = "".join(f"nvidia.com/gpu={i}\n" for i in range(8))
    assert lib.cdi_problems(without_all, 8, "/x.yaml") == ["the CDI spec /x.yaml has no nvidia.com/gpu=all device."]
