# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters for the vllm role; the logic lives in module_utils/vllm.py.

``enclave.llm.vllm_problems``    settings | vllm_problems -> [message] (empty: the role may go ahead)
``enclave.llm.vllm_profile``     name | vllm_profile(extra) -> the model profile with vLLM's keys filled in
``enclave.llm.vllm_exec_start``  settings | vllm_exec_start -> the ExecStart= value of the unit
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.enclave.llm.plugins.module_utils import vllm as lib


def vllm_problems(settings):
    return lib.problems(settings)


def vllm_profile(name, extra=None):
    try:
        return lib.resolve(name, extra)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def vllm_exec_start(settings):
    """``settings``: what module_utils/vllm.podman_run_args reads, plus ``podman``, ``image``,
    ``model_profile``, ``profiles_extra``, ``served_model_name`` and ``log_level``."""
    try:
        profile = lib.resolve(settings["model_profile"], settings.get("profiles_extra"))
        argv = [settings["podman"], "run", *lib.podman_run_args(profile, settings), settings["image"]]
        argv += lib.serve_args(profile, settings["served_model_name"], settings["log_level"])
    except (KeyError, ValueError) as exc:
        raise AnsibleFilterError(f"vllm_exec_start: {exc}") from exc
    return lib.exec_line(argv)


class FilterModule:
    """vLLM filters."""

    def filters(self):
        return {"vllm_problems": vllm_problems, "vllm_profile": vllm_profile, "vllm_exec_start": vllm_exec_start}
