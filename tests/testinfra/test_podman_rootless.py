"""podman_rootless: the service account runs images from the internal registry
and nothing else, its containers have no network, and it cannot widen its own
configuration or gain privileges.

Every refusal is shown next to a pull that succeeded from the internal
registry in the same test run, so "refused" cannot mean "Podman is broken".
Commands run as the account through its own systemd instance, as its units do.
"""

from __future__ import annotations

import json
import tomllib

import pytest
import yaml
from enclave_host import REPO

ROLE_DEFAULTS = yaml.safe_load((REPO / "roles" / "podman_rootless" / "defaults" / "main.yml").read_text())


@pytest.fixture
def account(enclave_vars) -> str:
    return enclave_vars.get("podman_rootless_user", "enclave-llm")


@pytest.fixture
def registry(enclave_vars) -> str:
    return enclave_vars.get("podman_rootless_registry") or enclave_vars["enclave_mirror"]["registry"]


@pytest.fixture
def images(request, registry) -> dict:
    return {
        kind: request.config.getoption(f"--enclave-{kind}-image").format(registry=registry)
        for kind in ("accepted", "unsigned")
    }


def as_account(host, account, *command):
    """Run a command as the account inside its systemd instance."""
    return host.run(
        "systemd-run --quiet --wait --pipe --machine=%s@ --user " + " ".join(["%s"] * len(command)),
        account,
        *command,
    )


@pytest.fixture
def accepted_image(host, account, images) -> str:
    """The accepted image in the account's storage, where the role handed it
    over: the control for every refusal."""
    present = as_account(host, account, "podman", "image", "exists", images["accepted"])
    assert present.rc == 0, f"the account does not have {images['accepted']}: {present.stderr}"
    return images["accepted"]


def test_ENC_PD_001_account_is_a_system_user_without_login(host, account):
    user = host.user(account)
    assert user.exists
    assert user.uid < 1000, f"{account} has uid {user.uid}, not a system uid"
    assert user.shell.endswith("/nologin")
    assert user.password in ("!", "*", "!*"), "the account has a usable password"
    assert user.groups == [user.group], f"supplementary groups: {user.groups}"


def test_ENC_PD_001_account_cannot_sudo(host, account):
    listed = host.run("sudo --list --other-user=%s", account)
    assert f"{account} is not allowed to run sudo" in listed.stdout + listed.stderr, listed.stdout
    tried = host.run("runuser -u %s -- sudo --non-interactive true", account)
    assert tried.rc != 0


@pytest.mark.parametrize("kind", ["subuid", "subgid"])
def test_ENC_PD_002_account_has_exactly_one_subordinate_range(host, enclave_vars, account, kind):
    start = int(enclave_vars.get("podman_rootless_subid_start", 1000000000))
    count = int(enclave_vars.get("podman_rootless_subid_count", 65536))
    uid = str(host.user(account).uid)
    entries = [line.split(":") for line in host.file(f"/etc/{kind}").content_string.split() if ":" in line]
    own = [(int(s), int(c)) for owner, s, c in entries if owner in (account, uid)]
    assert own == [(start, count)]
    for owner, s, c in entries:
        if owner not in (account, uid):
            assert int(s) + int(c) <= start or start + count <= int(s), f"{owner}'s range overlaps"


def test_account_systemd_instance_runs_without_login(host, account):
    uid = host.user(account).uid
    assert host.file(f"/var/lib/systemd/linger/{account}").exists
    assert host.service(f"user@{uid}.service").is_running


def test_ENC_PD_003_container_configuration_belongs_to_root(host, account):
    """The account's home and container configuration are root's and not writable by the account's group or others."""
    home = host.user(account).home
    config = f"{home}/.config/containers"
    for path in (home, f"{home}/.config", config, f"{config}/policy.json", f"{config}/registries.conf"):
        info = host.file(path)
        assert info.exists, path
        assert (info.user, info.mode & 0o022) == ("root", 0), f"{path}: {info.user} {oct(info.mode)}"


# Each attempt writes when the control it checks has failed.
@pytest.mark.mutates_host
def test_ENC_PD_003_account_cannot_replace_its_container_configuration(host, account):
    home = host.user(account).home
    config = f"{home}/.config/containers"
    for path in (home, f"{home}/.config", config, f"{config}/policy.json", f"{config}/registries.conf"):
        assert host.file(path).user == "root", path
    for attempt in (
        f"touch {config}/policy.json",
        f"mv {home}/.config {home}/.config-old",
        f"mkdir {home}/elsewhere",
    ):
        result = host.run("runuser -u %s -- sh -c %s", account, attempt)
        assert result.rc != 0, attempt
        assert "Permission denied" in result.stderr, f"{attempt}: {result.stderr}"


def test_ENC_PD_005_policy_rejects_by_default_and_accepts_only_the_internal_registry(host, account, registry):
    home = host.user(account).home
    expected = {
        "/etc/containers/policy.json": ("containers-storage", "[overlay@/var/lib/containers/storage]"),
        f"{home}/.config/containers/policy.json": ("oci-archive", f"{home}/images"),
    }
    for path, handover in expected.items():
        policy = json.loads(host.file(path).content_string)
        assert policy["default"] == [{"type": "reject"}], path
        scopes = {(t, s) for t, entries in policy.get("transports", {}).items() for s in entries}
        assert scopes == {("docker", registry), handover}, f"{path}: {scopes}"
    assert host.file(f"{home}/images").user == "root"
    assert host.file(f"{home}/images").mode == 0o755


def test_ENC_PD_007_account_containers_default_to_no_network(host, account):
    """A container the account starts gets no network unless its unit asks for one."""
    path = f"{host.user(account).home}/.config/containers/containers.conf"
    conf = tomllib.loads(host.file(path).content_string)
    assert conf["containers"]["netns"] == "none", path
    assert host.file(path).user == "root", path


# Runs a container in the account's storage.
@pytest.mark.mutates_host
def test_ENC_PD_007_container_of_the_account_has_only_loopback(host, account, accepted_image):
    links = as_account(host, account, "podman", "run", "--rm", accepted_image, "ip", "-o", "link")
    assert links.rc == 0, links.stderr
    names = [line.split(":")[1].strip() for line in links.stdout.splitlines()]
    assert names == ["lo"], links.stdout


def test_ENC_PD_004_podman_searches_no_registry_and_blocks_public_ones(host, account, registry, enclave_vars):
    """What the account's Podman has loaded (podman info), and the files it loaded it from."""
    info = as_account(host, account, "podman", "info", "--format=json")
    assert info.rc == 0, info.stderr
    registries = json.loads(info.stdout)["registries"]
    assert not registries.get("search"), registries
    name = "podman_rootless_blocked_registries"
    blocked = enclave_vars.get(name) or ROLE_DEFAULTS[name]
    for path in ("/etc/containers/registries.conf", f"{host.user(account).home}/.config/containers/registries.conf"):
        conf = tomllib.loads(host.file(path).content_string)
        assert conf["unqualified-search-registries"] == [], path
        assert conf["short-name-mode"] == "enforcing", path
        entries = {entry["location"]: entry.get("blocked", False) for entry in conf.get("registry", [])}
        assert entries.pop(registry, None) is False, f"{path}: the internal registry {registry} is blocked or missing"
        assert set(blocked) <= set(entries), f"{path}: {sorted(set(blocked) - set(entries))} not listed"
        assert all(entries.values()), f"{path}: registries not blocked: {[n for n, b in entries.items() if not b]}"


# A pull that is not refused stores an image.
@pytest.mark.mutates_host
def test_ENC_PD_004_short_name_is_refused(host, account, accepted_image):
    # Podman records an alias for every image it loads (the accepted one
    # resolves to the internal registry): ask for a name it has never seen.
    result = as_account(host, account, "podman", "pull", "enclave-never-loaded")
    assert result.rc != 0
    assert "did not resolve to an alias and no unqualified-search registries are defined" in result.stderr


@pytest.mark.mutates_host
def test_ENC_PD_004_public_registry_is_blocked(host, account, accepted_image):
    result = as_account(host, account, "podman", "pull", "docker.io/library/busybox:latest")
    assert result.rc != 0
    assert "registry docker.io is blocked" in result.stderr, result.stderr


# Pulls, saves and removes images as root.
@pytest.mark.mutates_host
def test_ENC_PD_005_archive_outside_the_handover_folder_is_rejected(host, account, accepted_image):
    """The same bytes as the accepted image, saved by root into a folder other
    than the hand-over one."""
    archive = "/tmp/enclave-policy-test.tar"
    saved = host.run(
        "podman pull --quiet %s && podman save --quiet --format oci-archive -o %s %s && chmod 0644 %s",
        accepted_image,
        archive,
        accepted_image,
        archive,
    )
    try:
        assert saved.rc == 0, saved.stderr
        result = as_account(host, account, "podman", "load", "--input", archive)
    finally:
        host.run("rm -f %s; podman rmi --ignore %s", archive, accepted_image)
    assert result.rc != 0
    assert f"oci-archive: Source image rejected: Running image oci-archive:{archive}" in result.stderr, result.stderr


@pytest.mark.mutates_host
def test_ENC_PD_005_root_pull_of_a_signed_internal_image_succeeds_and_an_unsigned_one_is_rejected(
    host, enclave_vars, images, accepted_image
):
    if enclave_vars.get("podman_rootless_trust", "signed") != "signed":
        pytest.skip("images are trusted by digest on this host")
    signed = host.run("podman pull --quiet %s", images["accepted"])
    assert signed.rc == 0, signed.stderr
    host.run("podman rmi %s", images["accepted"])
    unsigned = host.run("podman pull %s", images["unsigned"])
    assert unsigned.rc != 0
    assert "A signature was required, but no signature exists" in unsigned.stderr, unsigned.stderr
    assert host.run("podman image exists %s", images["unsigned"]).rc == 1


@pytest.mark.mutates_host
def test_ENC_PD_005_the_handover_copy_checks_signatures_as_a_pull_does(host, enclave_vars, images):
    """The role's hand-over (skopeo from the registry into an archive) under root's policy."""
    if enclave_vars.get("podman_rootless_trust", "signed") != "signed":
        pytest.skip("images are trusted by digest on this host")
    archive = "/tmp/enclave-handover-test.tar"
    copy = "skopeo copy --quiet --remove-signatures docker://%s oci-archive:%s:enclave/handover-test"
    try:
        signed = host.run(copy, images["accepted"], archive)
        host.run("rm -f %s", archive)
        unsigned = host.run(copy, images["unsigned"], archive)
        left = host.file(archive).exists
    finally:
        host.run("rm -f %s", archive)
    assert signed.rc == 0, signed.stderr
    assert unsigned.rc != 0
    assert "A signature was required, but no signature exists" in unsigned.stderr, unsigned.stderr
    assert not left, "a refused copy left an archive behind"


@pytest.mark.mutates_host
def test_ENC_PD_004_root_cannot_pull_from_a_public_registry_either(host):
    result = host.run("podman pull docker.io/library/busybox:latest")
    assert result.rc != 0
    assert "registry docker.io is blocked" in result.stderr, result.stderr


@pytest.mark.parametrize("unit", ["podman.socket", "podman.service", "podman-auto-update.timer"])
def test_ENC_PD_006_rootful_podman_units_are_masked(host, unit):
    state = host.run("systemctl is-enabled %s", unit).stdout.strip()
    assert state == "masked"
