"""atomic_file: a file is replaced whole, with its mode, and nothing is left behind."""

from __future__ import annotations

import os

import pytest
from ansible_collections.enclave.llm.plugins.module_utils import atomic_file


def test_text_replaces_the_file_with_the_given_mode(tmp_path):
    path = tmp_path / "m.prom"
    atomic_file.write_atomic(str(path), "a\n")
    atomic_file.write_atomic(str(path), "b\n", mode=0o600)
    assert path.read_text() == "b\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(tmp_path) == ["m.prom"]


def test_bytes_are_written_as_they_are(tmp_path):
    path = tmp_path / "manifest.json.sig"
    signature = bytes(range(256))
    atomic_file.write_atomic(str(path), signature)
    assert path.read_bytes() == signature
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        atomic_file.write_atomic(str(path), 42)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["state.json"]
