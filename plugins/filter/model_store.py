# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters used by the model_store role; the logic lives in module_utils/models/store.py.

Where the pinned revision lives is the model store's section of the site plan
(``enclave.llm.site_plan``, module_utils/site.py), not a filter of its own.

``enclave.llm.model_store_problems``    profile | model_store_problems(extra, revision, root, url, signature,
                                        keyring, keep) -> messages
``enclave.llm.model_store_prune``       find's files | model_store_prune(current, keep) -> paths to remove
``enclave.llm.model_folder_name``       'deepseek-ai/DeepSeek-R1' | model_folder_name -> 'deepseek-r1'
``enclave.llm.model_revision_problem``  revision | model_revision_problem -> '' or why it is not pinned
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.enclave.llm.plugins.module_utils.models import manifest as model_manifest
from ansible_collections.enclave.llm.plugins.module_utils.models import store as lib


def model_store_problems(profile, extra, revision, root, mirror_url, signature, keyring, keep):
    return lib.settings_problems(profile, extra, revision, root, mirror_url, signature, keyring, keep)


def model_store_prune(files, current, keep):
    return lib.revisions_to_remove(files, current, keep)


def model_folder_name(model):
    try:
        return lib.folder_name(model)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def model_revision_problem(revision):
    return model_manifest.revision_problem(revision)


class FilterModule:
    """model_store filters."""

    def filters(self):
        return {
            "model_store_problems": model_store_problems,
            "model_store_prune": model_store_prune,
            "model_folder_name": model_folder_name,
            "model_revision_problem": model_revision_problem,
        }
