"""The Lynis bench reads which tests withheld hardening points from Lynis's log."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from lynis_index import points_lost

# Lines as Lynis 3.0.8's LogText and AddHP write them.
LOG = (Path(__file__).parent / "fixtures" / "lynis" / "partial-points.log").read_text()


def test_partial_scores_are_summed_per_test_and_full_scores_left_out():
    assert points_lost(LOG.splitlines()) == {"ACCT-9622": (2, 3), "KRNL-6000": (0, 2)}


def test_points_before_any_test_are_not_charged_to_one():
    lines = ["2026-11-29 05:00:00 Hardening: assigned partial number of hardening points (0 of 5). Currently ..."]
    assert points_lost(lines) == {}


def test_a_log_without_partial_scores_gives_nothing():
    assert points_lost(LOG.splitlines()[-2:]) == {}
