"""offline_mirrors: every package source on the host is the internal mirror."""

from __future__ import annotations

import configparser
from urllib.parse import urlsplit

import pytest


def _apt_repository_uris(host) -> set[str]:
    # indextargets lists what apt actually uses, whatever file or format
    # declared it: a stray source anywhere shows up here.
    out = host.check_output("apt-get indextargets --format '$(REPO_URI)'")
    return {line.strip() for line in out.splitlines() if line.strip()}


def _mirror_prefixes(enclave_vars) -> list[str]:
    mirror = enclave_vars["enclave_mirror"]
    urls = [mirror["apt_url"], mirror.get("apt_security_url") or ""]
    return [u.rstrip("/") + "/" for u in urls if u]


def test_ENC_MR_001_apt_uses_only_the_mirror(host, enclave_vars):
    uris = _apt_repository_uris(host)
    prefixes = _mirror_prefixes(enclave_vars)
    assert uris, "apt has no repository at all: the sources were emptied, not replaced"
    foreign = sorted(u for u in uris if not u.startswith(tuple(prefixes)))
    assert not foreign, f"apt still uses sources other than the mirror: {foreign}"
    assert all(any(u.startswith(p) for u in uris) for p in prefixes), (
        f"a mirror repository is missing: uses {sorted(uris)}, expected all of {prefixes}"
    )


def test_ENC_MR_002_no_other_source_definitions(host):
    leftovers = host.check_output(
        "find /etc/apt/sources.list.d -maxdepth 1 -type f \\( -name '*.list' -o -name '*.sources' \\)"
    )
    assert leftovers == "", f"source definitions besides the mirror remain: {leftovers}"


def test_ENC_MR_003_every_source_is_pinned_to_the_mirror_keys(host):
    lines = [line for line in host.file("/etc/apt/sources.list").content_string.splitlines() if line.startswith("deb")]
    assert lines
    for line in lines:
        assert "signed-by=/etc/apt/keyrings/enclave-mirror/" in line, f"source without a pinned key: {line}"


def test_ENC_MR_003_pinned_keys_are_the_inventory_keys(host, enclave_vars):
    names = sorted(host.check_output("ls /etc/apt/keyrings/enclave-mirror").split())
    expected = sorted(p.rsplit("/", 1)[-1] for p in enclave_vars["enclave_mirror"]["apt_keyring_files"])
    assert names == expected


def test_ENC_MR_002_removed_sources_were_kept(host):
    backups = host.file("/var/backups/enclave/package-sources")
    assert backups.is_directory
    assert backups.mode == 0o700


# apt-get update rewrites the package lists under /var/lib/apt.
@pytest.mark.mutates_host
def test_ENC_MR_003_mirror_indexes_verify(host):
    # A fresh update must pass with no warning: signatures verify with the
    # pinned keys and every suite exists on the mirror.
    result = host.run("apt-get update 2>&1")
    assert result.rc == 0, result.stdout
    problems = [l for l in result.stdout.splitlines() if l.startswith(("W:", "E:", "Err:"))]
    assert not problems, problems


@pytest.fixture
def pip_conf(host) -> configparser.ConfigParser:
    conf = host.file("/etc/pip.conf")
    assert conf.exists, "/etc/pip.conf is missing"
    parser = configparser.ConfigParser()
    parser.read_string(conf.content_string)
    return parser


def test_ENC_MR_004_pip_uses_only_the_wheelhouse(pip_conf, enclave_vars):
    glob = pip_conf["global"]
    wheelhouse = enclave_vars["enclave_mirror"]["pip_index_url"]
    if glob.get("no-index") == "true":
        assert glob.get("find-links") == wheelhouse
    else:
        assert glob.get("index-url") == wheelhouse
    assert "extra-index-url" not in glob
    assert glob.get("disable-pip-version-check") == "true"
    if wheelhouse.startswith("http://"):
        assert glob.get("trusted-host") == urlsplit(wheelhouse).hostname
