# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters used by the podman_rootless role; the logic lives in module_utils/podman_rootless.py.

``enclave.llm.subid_plan``             /etc/subuid text | subid_plan(user, uid, start, count, kind) -> plan
``enclave.llm.registry_problems``      registry | registry_problems(blocked, insecure, profile, trust, keys, lookaside)
``enclave.llm.containers_policy``      registry | containers_policy(trust, key_paths, local_scopes) -> policy.json
``enclave.llm.image_problems``         images | image_problems(trust, profile) -> messages
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.enclave.llm.plugins.module_utils import podman_rootless as lib


def subid_plan(text, user, uid, start, count, kind="subuid"):
    try:
        return lib.subid_plan(text, user, uid, start, count, kind)
    except ValueError as exc:
        raise AnsibleFilterError(f"/etc/{kind}: {exc}") from exc


def registry_problems(registry, blocked, insecure, profile, trust, signing_keys, lookaside):
    return lib.registry_problems(registry, blocked, insecure, profile, trust, signing_keys, lookaside)


def containers_policy(registry, trust, key_paths, local_scopes=None):
    return lib.policy_document(registry, trust, key_paths, local_scopes)


def image_problems(images, trust, profile):
    return lib.image_problems(images, trust, profile)


class FilterModule:
    """podman_rootless filters."""

    def filters(self):
        return {
            "subid_plan": subid_plan,
            "registry_problems": registry_problems,
            "containers_policy": containers_policy,
            "image_problems": image_problems,
        }
