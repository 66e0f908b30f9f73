# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters for model profiles; the data and logic live in module_utils/models/profiles.py.

``enclave.llm.model_profile``           name | model_profile(extra) -> the profile (fails if unknown)
``enclave.llm.model_profile_problems``  name | model_profile_problems(extra, enclave_gpus) -> [message]
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.enclave.llm.plugins.module_utils.models import profiles as lib


def model_profile(name, extra=None):
    try:
        return lib.resolve(name, extra)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def model_profile_problems(name, extra=None, gpu_facts=None):
    return lib.host_problems(name, extra, gpu_facts)


class FilterModule:
    """Model profile filters."""

    def filters(self):
        return {"model_profile": model_profile, "model_profile_problems": model_profile_problems}
