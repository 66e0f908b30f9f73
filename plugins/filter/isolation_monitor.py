# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters for the isolation_monitor role; the logic lives in module_utils/monitor/config.py.

``enclave.llm.isolation_monitor_problems``  settings | isolation_monitor_problems -> [message] (empty: valid)
"""

from __future__ import annotations

import json

from ansible_collections.enclave.llm.plugins.module_utils.monitor import config as lib


def isolation_monitor_problems(settings):
    """What the installed monitor would refuse in ``settings``, one message per problem.

    The settings go through JSON first, as they reach the monitor on the host.
    """
    _config, problems = lib.validate(json.loads(json.dumps(settings)))
    return problems


class FilterModule:
    """Isolation monitor filters."""

    def filters(self):
        return {"isolation_monitor_problems": isolation_monitor_problems}
