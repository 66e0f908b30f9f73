# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The site plan's filter; the logic lives in module_utils/site.py.

``enclave.llm.site_plan``   enclave_site | site_plan(firewall={...}) -> enclave_site with that section derived
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.enclave.llm.plugins.module_utils import site as lib


def site_plan(plan, **sections):
    try:
        return lib.site_plan(plan, **sections)
    except lib.PlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """Site plan filters."""

    def filters(self):
        return {"site_plan": site_plan}
