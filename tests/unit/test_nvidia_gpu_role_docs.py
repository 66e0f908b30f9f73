"""The nvidia_gpu role's README, defaults and argument spec agree.

The same checks as test_preflight_role_docs.py, with its helpers; run with
PREFLIGHT_README_UPDATE=1 to rewrite the README's variable table.
"""

from __future__ import annotations

import os

import test_preflight_role_docs as docs
import yaml

ROLE = "nvidia_gpu"


def test_every_option_is_described():
    docs.test_every_option_is_described(ROLE)


def test_readme_table_is_generated_from_the_argument_spec():
    docs.test_readme_table_is_generated_from_the_argument_spec(ROLE)


def test_public_defaults_match_the_argument_spec():
    docs.test_public_defaults_match_the_argument_spec(ROLE)


def test_task_files_open_with_inputs_and_outputs():
    for path in sorted((docs.ROLES_DIR / ROLE / "tasks").glob("*.yml")):
        docs.test_task_files_open_with_inputs_and_outputs(path)


def test_expected_count_has_no_default_and_must_be_set():
    defaults = yaml.safe_load((docs.ROLES_DIR / ROLE / "defaults" / "main.yml").read_text())
    assert defaults["nvidia_gpu_expected_count"] is None
    assert os.path.exists(docs.ROLES_DIR / ROLE / "vars" / "Debian.yml")
