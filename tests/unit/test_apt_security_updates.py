"""module_utils/hardening/facts.py: pending security updates (ENC-OS-015) from apt's
output, recorded on a Debian 12 host with 142 upgrades pending, some of them
from bookworm-security (tests/unit/fixtures/hardening/apt_*.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.hardening import facts as lib

FIXTURES = Path(__file__).parent / "fixtures" / "hardening"
SECURITY = "origin=Debian,codename=${distro_codename}-security,label=Debian-Security"
SECURITY_INDEX = "http://deb.debian.org/debian-security bookworm-security/main amd64 Packages"
MAIN_INDEX = "http://deb.debian.org/debian bookworm/main amd64 Packages"


def fixture(name):
    return (FIXTURES / name).read_text()


@pytest.fixture
def recorded():
    return (
        lib.parse_apt_simulation(fixture("apt_get_s_dist_upgrade.txt")),
        lib.parse_apt_policy_versions(fixture("apt_cache_policy_packages.txt")),
        lib.parse_apt_sources(fixture("apt_cache_policy.txt")),
    )


def test_the_simulation_lists_each_upgrade_with_both_versions():
    upgrades = lib.parse_apt_simulation(fixture("apt_get_s_dist_upgrade.txt"))
    assert len(upgrades) == 142
    assert upgrades["libssl3"] == {"installed": "3.0.19-1~deb12u2", "candidate": "3.0.22-1~deb12u2"}
    assert upgrades["zlib1g"]["installed"] == "1:1.2.13.dfsg-1"


def test_a_new_install_is_not_an_upgrade():
    text = "Inst linux-image-6.1.0-30-amd64 (6.1.124-1 Debian-Security:12/stable-security [amd64])\n"
    assert lib.parse_apt_simulation(text) == {}


def test_the_sources_carry_every_release_field_and_the_site():
    sources = lib.parse_apt_sources(fixture("apt_cache_policy.txt"))
    assert sources[SECURITY_INDEX] == {
        "v": "12",
        "o": "Debian",
        "a": "oldstable-security",
        "n": "bookworm-security",
        "l": "Debian-Security",
        "c": "main",
        "b": "amd64",
        "site": "deb.debian.org",
    }
    assert sources["/var/lib/dpkg/status"] == {"a": "now"}


def test_the_version_table_marks_the_installed_version_below_the_newer_ones():
    versions = lib.parse_apt_policy_versions(fixture("apt_cache_policy_packages.txt"))
    assert [v["version"] for v in versions["libssl3"]] == [
        "3.0.22-1~deb12u2",
        "3.0.20-1~deb12u2",
        "3.0.19-1~deb12u2",
        "3.0.17-1~deb12u2",
    ]
    assert [v["installed"] for v in versions["libssl3"]] == [False, False, True, False]
    assert versions["libssl3"][0]["sources"] == [SECURITY_INDEX]
    assert versions["libssl3"][2]["sources"] == ["/var/lib/dpkg/status"]


def test_only_updates_from_the_security_source_are_pending(recorded):
    pending = lib.pending_security_updates(*recorded, [SECURITY], "Debian", "bookworm")
    by_name = {p["name"]: p for p in pending}
    # bash and base-files are upgrades of the point release, not security updates.
    assert sorted(by_name) == ["libexpat1", "libpam0g", "libssl3", "tzdata", "zlib1g"]
    assert by_name["libexpat1"] == {
        "name": "libexpat1",
        "installed": "2.5.0-1+deb12u1",
        "version": "2.5.0-1+deb12u5",
        "source": SECURITY_INDEX,
        "spec": "libexpat1=2.5.0-1+deb12u5",
    }


def test_a_pattern_for_another_release_matches_nothing(recorded):
    assert lib.pending_security_updates(*recorded, [SECURITY], "Debian", "trixie") == []


def test_no_pattern_no_pending_update(recorded):
    assert lib.pending_security_updates(*recorded, [], "Debian", "bookworm") == []


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        (SECURITY, True),
        ("o=Debian,n=bookworm-security", True),
        ("origin=${distro_id},archive=*-security", True),
        ("site=deb.debian.org,component=main,label=Debian-Security", True),
        ("origin=Debian,codename=bookworm-security,label=Debian", False),
        ("l=Debian-Security,c=contrib", False),
    ],
)
def test_origin_patterns_match_as_unattended_upgrades_does(pattern, matches):
    release = lib.parse_apt_sources(fixture("apt_cache_policy.txt"))[SECURITY_INDEX]
    assert lib.origin_pattern_matches(pattern, release, "Debian", "bookworm") is matches


def test_a_point_release_source_is_no_security_source():
    release = lib.parse_apt_sources(fixture("apt_cache_policy.txt"))[MAIN_INDEX]
    assert not lib.origin_pattern_matches(SECURITY, release, "Debian", "bookworm")


@pytest.mark.parametrize("pattern", ["origin", "flavour=Debian", "o=Debian,,n=x"])
def test_a_malformed_pattern_says_what_is_wrong(pattern):
    with pytest.raises(ValueError, match="key=value"):
        lib.origin_pattern_matches(pattern, {}, "Debian", "bookworm")


def test_the_distro_is_read_as_unattended_upgrades_substitutes_it():
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
    text += "VERSION_CODENAME=bookworm\nID=debian\n"
    assert lib.distro_of(text) == ("Debian", "bookworm")
