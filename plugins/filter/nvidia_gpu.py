# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters used by the nvidia_gpu role (and the preflight); the logic lives in module_utils/gpu/nvidia.py.

``enclave.llm.nvidia_input_problems``     inputs dict -> [message, ...]
``enclave.llm.nvidia_version_compare``    a | nvidia_version_compare(b) -> -1, 0, 1 (versions, not strings)
``enclave.llm.nvidia_upstream_version``   '1:580.95.05-1' -> '580.95.05'
``enclave.llm.nvidia_packages``           ['nvidia-fabricmanager-{branch}'] | nvidia_packages('580') -> names
``enclave.llm.apt_madison_versions``      `apt-cache madison` output -> {package: [version, ...]}
``enclave.llm.dnf_list_versions``         `dnf list --showduplicates` output -> {package: [version, ...]}
``enclave.llm.dnf_module_versions``       `dnf module info` output -> {package: [version, ...]}
``enclave.llm.dnf_stream_enabled``        `dnf module list` output | dnf_stream_enabled(module, stream) -> bool
``enclave.llm.installed_package_versions`` ansible_facts.packages | installed_package_versions(names) -> {...}
``enclave.llm.nvidia_all_installed``      ansible_facts.packages | nvidia_all_installed({name: version}) -> bool
``enclave.llm.merge_package_versions``    [mapping, ...] -> their union
``enclave.llm.nvidia_select_versions``    wanted | nvidia_select_versions(available) -> {versions, problems}
``enclave.llm.nvidia_package_specs``      {name: version} | nvidia_package_specs('apt') -> ['name=version']
``enclave.llm.nvidia_pci_count_problems`` expected | nvidia_pci_count_problems(pci_gpu_count) -> [message]
``enclave.llm.nvidia_fabric_manager_wanted`` mode | nvidia_fabric_manager_wanted(nvswitch_count) -> bool
``enclave.llm.nvidia_fabric_manager_problems`` driver | nvidia_fabric_manager_problems(fm_version) -> [message]
``enclave.llm.nvidia_reboot_reasons``     enclave_gpus | nvidia_reboot_reasons(driver_version) -> [reason]
``enclave.llm.nvidia_verify_problems``    enclave_gpus | nvidia_verify_problems(expected_count=..., ...) -> [message]
``enclave.llm.nvidia_cdi_problems``       `nvidia-ctk cdi list` output | nvidia_cdi_problems(count, path) -> [message]
``enclave.llm.gpu_profile_problems``      profile | gpu_profile_problems(enclave_gpus) -> [message]
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.enclave.llm.plugins.module_utils.gpu import nvidia as lib


def nvidia_input_problems(inputs):
    """Messages for the role's inputs, given as a mapping of ``input_problems``' keyword arguments."""
    if not isinstance(inputs, dict):
        raise AnsibleFilterError("nvidia_input_problems expects a mapping of the role's inputs")
    return lib.input_problems(**inputs)


def nvidia_version_compare(first, second):
    try:
        return lib.compare_versions(first, second)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def nvidia_select_versions(wanted, available, source="the configured package repositories"):
    return lib.select_versions(wanted or {}, available or {}, source)


def nvidia_verify_problems(facts, expected_count, driver_version, ecc=True, mig=False, persistence=True, fabric=None):
    return lib.verify_problems(
        facts,
        int(expected_count),
        driver_version,
        ecc=ecc,
        mig=mig,
        persistence=persistence,
        fabric=fabric,
    )


def merge_package_versions(mappings):
    return lib.merge_versions(*(mappings or []))


class FilterModule:
    """NVIDIA GPU filters."""

    def filters(self):
        return {
            "nvidia_input_problems": nvidia_input_problems,
            "nvidia_version_compare": nvidia_version_compare,
            "nvidia_upstream_version": lib.upstream_version,
            "nvidia_packages": lib.expand_packages,
            "apt_madison_versions": lib.parse_apt_madison,
            "dnf_list_versions": lib.parse_dnf_list,
            "dnf_module_versions": lib.parse_dnf_module_artifacts,
            "dnf_stream_enabled": lib.dnf_stream_enabled,
            "installed_package_versions": lib.installed_versions,
            "nvidia_all_installed": lib.all_installed,
            "merge_package_versions": merge_package_versions,
            "nvidia_select_versions": nvidia_select_versions,
            "nvidia_package_specs": lib.package_specs,
            "nvidia_pci_count_problems": lib.pci_count_problems,
            "nvidia_fabric_manager_wanted": lib.fabric_manager_wanted,
            "nvidia_fabric_manager_problems": lib.fabric_manager_problems,
            "nvidia_reboot_reasons": lib.reboot_reasons,
            "nvidia_verify_problems": nvidia_verify_problems,
            "nvidia_cdi_problems": lib.cdi_problems,
            "gpu_profile_problems": lib.profile_fits,
        }
