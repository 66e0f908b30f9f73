"""Unit tests for plugins/module_utils/models/store.py (pure: names, settings, pruning)."""

from __future__ import annotations

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.models import store as lib

REV = "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad"
OLD = ["1" * 40, "2" * 40, "3" * 40, "4" * 40]


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("enclave-lab/tiny-r1", "tiny-r1"),
        ("deepseek-ai/DeepSeek-R1", "deepseek-r1"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "deepseek-r1-distill-llama-70b"),
        ("Local-Model/", "local-model"),
    ],
)
def test_folder_name(model, name):
    assert lib.folder_name(model) == name


@pytest.mark.parametrize("model", ["", "owner/..", "owner/a b"])
def test_folder_name_refuses_unusable_names(model):
    with pytest.raises(ValueError, match="no usable folder name"):
        lib.folder_name(model)


def test_store_plan_paths():
    plan = lib.store_plan("tiny-r1", None, REV.upper(), "/srv/models/")
    assert plan["path"] == f"/srv/models/tiny-r1/{REV}"
    assert plan["current"] == "/srv/models/tiny-r1/current"


def test_store_plan_refuses_an_unknown_profile_and_a_branch():
    with pytest.raises(ValueError, match="enclave_model_profile 'nope'"):
        lib.store_plan("nope", None, REV, "/srv/models")
    with pytest.raises(ValueError, match="enclave_model_revision: revision 'main' is not pinned"):
        lib.store_plan("tiny-r1", None, "main", "/srv/models")


def problems(**changes):
    settings = {
        "profile_name": "tiny-r1",
        "profiles_extra": None,
        "revision": REV,
        "root": "/srv/models",
        "mirror_url": "http://198.51.100.10/models/",
        "signature": "required",
        "keyring": ["/k.gpg"],
        "keep": 2,
    }
    settings.update(changes)
    return lib.settings_problems(**settings)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"profile_name": "gpt-9"}, "enclave_model_profile 'gpt-9'"),
        ({"revision": "56d4cbb"}, "enclave_model_revision"),
        ({"root": "/"}, "model_store_root"),
        ({"root": "srv/models"}, "model_store_root"),
        ({"mirror_url": ""}, "enclave_mirror.models_url"),
        ({"signature": "maybe"}, "model_store_signature 'maybe'"),
        ({"keyring": []}, "model_store_keyring is empty"),
        ({"keep": -1}, "model_store_keep_revisions"),
        ({"keep": True}, "model_store_keep_revisions"),
    ],
)
def test_settings_problems_name_the_variable(changes, fragment):
    found = problems(**changes)
    assert len(found) == 1
    assert fragment in found[0]


def test_good_settings_have_no_problems():
    assert problems() == []
    assert problems(signature="optional", keyring=[]) == []


def test_prune_keeps_current_and_the_newest_others():
    folders = [{"path": f"/srv/models/m/{rev}", "ctime": i} for i, rev in enumerate(OLD)]
    folders += [{"path": "/srv/models/m/.manifest-cache", "ctime": 0}, {"path": "/srv/models/m/current", "ctime": 0}]
    assert lib.revisions_to_remove(folders, OLD[0], 2) == [f"/srv/models/m/{OLD[1]}"]
    assert lib.revisions_to_remove(folders, OLD[3], 0) == sorted(f"/srv/models/m/{r}" for r in OLD[:3])
    assert lib.revisions_to_remove(folders, OLD[3], 5) == []
