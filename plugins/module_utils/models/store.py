# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The model store's decisions, as pure functions the model_store role calls through filters.

Where a profile's weights live (``<root>/<name>/<revision>/``, ``name`` being the
lower-cased last component of the profile's ``model``), which settings are
wrong before anything changes, and which old revisions to remove.
"""

from __future__ import annotations

from ansible_collections.enclave.llm.plugins.module_utils.models import manifest as model_manifest
from ansible_collections.enclave.llm.plugins.module_utils.models import profiles as model_profiles

SIGNATURE_POLICIES = model_manifest.SIGNATURE_CHOICES


def folder_name(model):
    """``deepseek-ai/DeepSeek-R1`` -> ``deepseek-r1``: the store's folder for a profile's ``model``."""
    name = str(model or "").strip().rstrip("/").rsplit("/", 1)[-1].lower()
    if not model_manifest._NAME.match(name):
        raise ValueError(f"model {model!r} gives no usable folder name (letters, digits, '.', '_', '-')")
    return name


def store_plan(profile_name, profiles_extra, revision, root):
    """``{name, model, revision, path, current}`` for a profile; ValueError with the fix when it is wrong."""
    profile = model_profiles.resolve(profile_name, profiles_extra)
    problem = model_manifest.revision_problem(revision)
    if problem:
        raise ValueError(f"enclave_model_revision: {problem}")
    name = folder_name(profile["model"])
    base = f"{str(root).rstrip('/')}/{name}"
    return {
        "profile": profile_name,
        "model": profile["model"],
        "name": name,
        "revision": revision.lower(),
        "base": base,
        "path": f"{base}/{revision.lower()}",
        "current": f"{base}/current",
    }


def settings_problems(profile_name, profiles_extra, revision, root, mirror_url, signature, keyring, keep):
    """Every wrong setting of the role, each naming the variable and the fix ([] when none)."""
    problems = []
    try:
        model_profiles.resolve(profile_name, profiles_extra)
    except ValueError as exc:
        problems.append(str(exc))
    problem = model_manifest.revision_problem(revision)
    if problem:
        problems.append(f"enclave_model_revision: {problem}")
    if not str(root or "").startswith("/") or str(root).rstrip("/") in ("", "/"):
        problems.append(f"model_store_root {root!r} must be an absolute folder other than /, e.g. /srv/models")
    if not mirror_url:
        problems.append(
            "model_store_mirror_url is empty: set enclave_mirror.models_url (the mirror's models/ folder, "
            "https://... or a local or NFS path)"
        )
    if signature not in SIGNATURE_POLICIES:
        problems.append(f"model_store_signature {signature!r}: use one of {', '.join(SIGNATURE_POLICIES)}")
    elif signature == "required" and not keyring:
        problems.append(
            "model_store_signature is required but model_store_keyring is empty: list the mirror's "
            "manifest-signing public key file(s)"
        )
    if as_count(keep) is None:
        problems.append(f"model_store_keep_revisions {keep!r} must be a whole number >= 0")
    return problems


def as_count(value):
    """``value`` as a whole number >= 0 (``-e name=2`` gives the string '2'); None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def revisions_to_remove(folders, current, keep):
    """Revision folders to delete: all but ``current`` and the ``keep`` most recent others.

    ``folders`` are ``{path, ctime}`` (find's output); only 40-hex names count,
    so ``current``, ``.manifest-cache`` and anything else are never touched.
    """
    revisions = [
        folder
        for folder in folders
        if not model_manifest.revision_problem(folder["path"].rstrip("/").rsplit("/", 1)[-1])
        and folder["path"].rstrip("/").rsplit("/", 1)[-1] != current
    ]
    revisions.sort(key=lambda folder: folder["ctime"], reverse=True)
    return sorted(folder["path"] for folder in revisions[as_count(keep) :])
