"""Packages reach the enclave host only through the mirror host."""

import pytest
from labkit import AIDE_REBASELINE, ENCLAVE_HOST, MIRROR, play_recap, podman, run_playbook, state_digest

# A small package that no role installs.
PACKAGE = "hello"
MIRROR_ADDRESS = "198.51.100.10:3142"
# The module stops the mirror that CI's VM lane uses: CI runs it after the lanes.
pytestmark = pytest.mark.mirror_outage
ACNG_LOG = "/var/log/apt-cacher-ng/apt-cacher.log"


@pytest.fixture
def package_absent(host):
    host.run(f"apt-get purge -y {PACKAGE}")
    host.run("apt-get clean")
    assert not host.package(PACKAGE).is_installed
    yield
    host.run(f"apt-get purge -y {PACKAGE}")
    host.run("apt-get clean")
    # Installing and purging touched /usr, on purpose: as after a converge,
    # the file-integrity baseline is written again.
    host.run(AIDE_REBASELINE)


def test_install_goes_through_the_mirror(host, package_absent):
    result = host.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {PACKAGE}")
    assert result.rc == 0, result.stderr
    assert host.package(PACKAGE).is_installed
    assert f"http://{MIRROR_ADDRESS}/debian" in result.stdout
    # The mirror's own log shows it served the package to the enclave host.
    log = podman("exec", MIRROR, "cat", ACNG_LOG).stdout
    served = [line for line in log.splitlines() if f"/{PACKAGE}_" in line and "198.51.100.20" in line]
    assert served, f"the mirror has no record of serving {PACKAGE} to the enclave host"


def test_install_fails_without_the_mirror(host, package_absent, mirror_stopped):
    result = host.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {PACKAGE}")
    assert result.rc != 0
    assert not host.package(PACKAGE).is_installed
    # apt names the mirror it could not reach, and no other source was tried.
    assert MIRROR_ADDRESS in result.stderr
    assert "deb.debian.org" not in result.stdout + result.stderr


def test_site_stops_at_preflight_without_the_mirror(mirror_stopped):
    before = state_digest(ENCLAVE_HOST)
    result = run_playbook("site.yml")
    after = state_digest(ENCLAVE_HOST)
    assert result.returncode != 0
    assert "enclave_mirror.apt_url" in result.stdout
    assert "not reachable" in result.stdout
    recap = play_recap(result.stdout)
    assert recap[ENCLAVE_HOST]["changed"] == 0
    assert before == after, "the failed run changed the host"
