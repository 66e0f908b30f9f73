#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: report the host's NVIDIA GPUs as the driver and as the PCI bus see them."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Report NVIDIA GPUs, driver, NVLink and NVSwitch state as the fact enclave_gpus
version_added: 0.1.0
description:
  - Reads the GPUs three ways and reports them in the fact C(enclave_gpus).
  - C(nvidia-smi -q -x) gives the driver's view - driver and CUDA version and, per GPU, index, model,
    UUID, PCI bus id, memory, persistence mode, ECC and MIG mode (current and pending), MIG devices,
    the NVSwitch fabric state (HGX H100/H200), retired pages and remapped rows.
  - C(nvidia-smi topo -m) gives the interconnect matrix (C(NV18) between two GPUs is 18 bonded NVLinks).
  - C(/sys/bus/pci/devices) gives the bus's view, which needs no driver - every NVIDIA (C(0x10de)) device
    of class C(0x0300xx) or C(0x0302xx) is a GPU, every one of class C(0x0680xx) an NVSwitch. A GPU that
    has fallen off the bus or has no working driver is still counted there, and the fact lists the
    GPUs on the bus that nvidia-smi does not report.
  - Nothing is a failure here. No nvidia-smi and no NVIDIA device gives an empty list; NVIDIA devices
    without a working driver are reported with the driver state C(absent) or C(unreachable). What is
    acceptable is for the caller to decide (the C(nvidia_gpu) role, the preflight).
  - The module only reads, so it runs in check mode too.
author:
  - llm-enclave maintainers (@llm-enclave)
requirements:
  - nvidia-smi from the NVIDIA driver for the driver's view (optional)
attributes:
  check_mode:
    description: Read-only; runs in check mode as well.
    support: full
  diff_mode:
    description: Nothing to show.
    support: none
  facts:
    description: Sets C(ansible_facts.enclave_gpus).
    support: full
options:
  nvidia_smi:
    description:
      - Path of nvidia-smi. When it does not exist, C(nvidia-smi) is looked up in the PATH; when that
        fails too, the driver's view is reported as C(absent).
    type: path
    default: /usr/bin/nvidia-smi
  sysfs_root:
    description: Where sysfs is mounted; the PCI devices are read under C(SYSFS_ROOT/bus/pci/devices).
    type: path
    default: /sys
  topology:
    description: Also run C(nvidia-smi topo -m) when the driver answers and there are at least two GPUs.
    type: bool
    default: true
  timeout:
    description:
      - Seconds each nvidia-smi call may take. Without persistence mode every call initialises every
        GPU, which takes several seconds on an 8-GPU host.
    type: int
    default: 120
notes:
  - The GPU index is nvidia-smi's (the order of C(nvidia-smi -q), by PCI bus id), which is also
    CUDA's default order with C(CUDA_DEVICE_ORDER=PCI_BUS_ID).
  - PCI addresses are written as in sysfs (C(0000:9a:00.0)), also those that nvidia-smi prints as
    C(00000000:9A:00.0).
seealso:
  - module: enclave.llm.egress_probe
"""

EXAMPLES = r"""
- name: Read the GPUs
  enclave.llm.gpu_facts:

- name: Stop when a GPU is on the bus but not in nvidia-smi
  ansible.builtin.assert:
    that: ansible_facts.enclave_gpus.missing_from_driver | length == 0
    fail_msg: "{{ ansible_facts.enclave_gpus.notes | join('; ') }}"

- name: Read a copy of sysfs and another nvidia-smi (tests)
  enclave.llm.gpu_facts:
    sysfs_root: /tmp/fake-sys
    nvidia_smi: /tmp/fake-bin/nvidia-smi
    topology: false
"""

RETURN = r"""
ansible_facts:
  description: The fact C(enclave_gpus).
  returned: always
  type: dict
  contains:
    enclave_gpus:
      description: What the driver and the PCI bus say about the NVIDIA GPUs.
      type: dict
      contains:
        driver_state:
          description:
            - C(loaded) (nvidia-smi answered), C(absent) (no nvidia-smi), C(unreachable) (nvidia-smi cannot
              talk to the kernel driver, for instance when it is not loaded or its version differs from the
              user-space one), C(no_devices) or C(error).
          type: str
          sample: loaded
        driver_version:
          description: The loaded driver's version as nvidia-smi reports it.
          type: str
          sample: 580.95.05
        cuda_version:
          description: The highest CUDA version the driver supports.
          type: str
          sample: "13.0"
        kernel_module:
          description:
            - C(nvidia_loaded) and C(nvidia_version) (from C(/sys/module/nvidia/version)), and
              C(nouveau_loaded).
          type: dict
        nvidia_smi:
          description: C(path) of nvidia-smi (null when absent), its C(rc) and C(error) (its first line of complaint).
          type: dict
        attached_gpus:
          description: The GPU count nvidia-smi prints in its header (may exceed the GPUs it could read).
          type: int
        gpus:
          description:
            - One entry per GPU that nvidia-smi reports; empty without a working driver.
            - Each has C(index), C(minor_number), C(name), C(architecture), C(uuid), C(serial),
              C(pci_bus_id), C(pci_device_id), C(memory_total_mib), C(persistence_mode) (bool),
              C(ecc) and C(mig) (C(current), C(pending) as bool, null for N/A; C(mig.devices) with
              C(index), C(gpu_instance_id), C(compute_instance_id), C(multiprocessor_count),
              C(memory_total_mib)), C(fabric) (C(state), C(status), C(clique_id), C(cluster_uuid),
              C(bandwidth); null without NVSwitch), C(reset_required), C(recovery_action),
              C(retired_pages) (C(single_bit), C(double_bit), C(pending)) and C(remapped_rows)
              (C(correctable), C(uncorrectable), C(pending), C(failure)).
          type: list
          elements: dict
        count:
          description: How many GPUs nvidia-smi reports.
          type: int
        unreachable:
          description: GPUs nvidia-smi named but could not open, C({pci_bus_id, reason}).
          type: list
          elements: dict
        missing_from_driver:
          description: PCI addresses of NVIDIA GPUs on the bus that nvidia-smi does not report (driver loaded only).
          type: list
          elements: str
        pci:
          description:
            - C(gpus) and C(nvswitches) on the PCI bus (C(address), C(device_id), C(class), bound C(driver)),
              C(gpu_count) and C(nvswitch_count).
          type: dict
        nvswitch_present:
          description: Whether an NVSwitch is on the PCI bus (the fabric manager is then needed).
          type: bool
        topology:
          description:
            - From C(nvidia-smi topo -m) (null when not run) - C(gpus), C(links) (GPU to GPU, raw entries
              such as C(NV18)), C(pairs), C(nvlink_pairs), C(min_nvlinks), C(all_pairs_nvlink),
              C(cpu_affinity), C(numa_affinity).
          type: dict
        notes:
          description: Sentences about what is missing or odd (no GPU, no driver, GPUs not reported).
          type: list
          elements: str
commands:
  description: The commands run.
  returned: always
  type: list
  elements: str
  sample:
    - timeout --kill-after=5 120 /usr/bin/nvidia-smi -q -x
    - timeout --kill-after=5 120 /usr/bin/nvidia-smi topo -m
"""

import os  # noqa: E402
import shlex  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.gpu import facts as lib  # noqa: E402


def find_nvidia_smi(module, path):
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return module.get_bin_path("nvidia-smi")


def run(module, argv, timeout, commands):
    """Run ARGV under coreutils' timeout (exit status 124 when it ran out), with the C locale."""
    argv = ["timeout", "--kill-after=5", str(timeout), *argv]
    commands.append(shlex.join(argv))
    return module.run_command(argv, environ_update={"LC_ALL": "C"})


def main():
    module = AnsibleModule(
        argument_spec={
            "nvidia_smi": {"type": "path", "default": "/usr/bin/nvidia-smi"},
            "sysfs_root": {"type": "path", "default": "/sys"},
            "topology": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] < 1:
        module.fail_json(msg=f"timeout must be at least 1 second, got {params['timeout']}")
    commands = []
    smi_path = find_nvidia_smi(module, params["nvidia_smi"])
    smi = None
    topology_text = None
    if smi_path:
        rc, stdout, stderr = run(module, [smi_path, "-q", "-x"], params["timeout"], commands)
        smi = {"path": smi_path, "rc": rc, "stdout": stdout, "stderr": stderr}
        if rc == 124:
            smi["stderr"] = f"nvidia-smi -q -x did not finish within {params['timeout']} s\n" + stderr
    facts = lib.build_facts(
        smi=smi,
        pci_devices=lib.read_pci_devices(params["sysfs_root"]),
        kernel_modules=lib.read_kernel_modules(params["sysfs_root"]),
    )
    if smi_path and params["topology"] and facts["driver_state"] == "loaded" and facts["count"] >= 2:
        rc, stdout, _stderr = run(module, [smi_path, "topo", "-m"], params["timeout"], commands)
        if rc == 0:
            topology_text = stdout
        facts["topology"] = lib.parse_topology(topology_text) if topology_text else None
    module.exit_json(changed=False, ansible_facts={"enclave_gpus": facts}, commands=commands)


if __name__ == "__main__":
    main()
