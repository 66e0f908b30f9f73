#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: the host's live hardening state as the fact enclave_hardening."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hardening_facts
short_description: Report the live hardening state of a host as the fact enclave_hardening
version_added: 0.1.0
description:
  - Reads what is in force now, not what a file on disk says - runtime sysctl values, mount
    options, SUID/SGID files, listening sockets with their processes, loaded audit rules, the
    digest of the nftables ruleset, the effective sshd configuration (C(sshd -T)), unit file
    states (enabled, masked), loaded kernel modules, the algorithms the installed OpenSSH knows, and
    the security updates apt could install from the sources it is configured with.
  - Each part is chosen with O(gather); a part whose tool is missing is reported as C(null) and
    named in C(unavailable), never as a failure. What is acceptable is the caller's decision.
  - The module only reads, so it runs in check mode too.
author:
  - llm-enclave maintainers (@llm-enclave)
options:
  gather:
    description: The parts to read.
    type: list
    elements: str
    default: [sysctl, mounts, modules, sshd, services]
    choices: [sysctl, mounts, setid, sockets, audit_rules, nft_digest, sshd, ssh_algorithms, services, modules, updates]
  sysctl_keys:
    description:
      - Read only these sysctl keys (faster than all of them); the ones the kernel lacks are listed
        in C(sysctl_missing). Empty reads every key.
    type: list
    elements: str
    default: []
  setid_roots:
    description: Directories searched for SUID/SGID files (one file system each, C(-xdev)).
    type: list
    elements: path
    default: [/usr, /bin, /sbin, /opt, /srv, /home]
  updates_origins:
    description:
      - With O(gather=updates), the sources whose newer versions count as security updates, in the
        Origins-Pattern syntax of unattended-upgrades (C(${distro_codename}) and C(${distro_id}) are
        substituted). Read from the package lists as they are; the module does not refresh them.
    type: list
    elements: str
    default: ["origin=Debian,codename=${distro_codename}-security,label=Debian-Security"]
"""

EXAMPLES = r"""
- name: Read the sysctls the role manages and the effective sshd configuration
  enclave.llm.hardening_facts:
    gather: [sysctl, sshd]
    sysctl_keys: [net.ipv4.ip_forward, kernel.kptr_restrict]

- name: Everything, for an audit
  enclave.llm.hardening_facts:
    gather: [sysctl, mounts, setid, sockets, audit_rules, nft_digest, sshd, ssh_algorithms, services, modules, updates]

- name: The security updates apt could install now from the configured sources
  enclave.llm.hardening_facts:
    gather: [updates]
    updates_origins: ["origin=Debian,codename=${distro_codename}-security,label=Debian-Security"]
"""

RETURN = r"""
enclave_hardening:
  description: The parts read (absent when not asked for).
  returned: always
  type: dict
  contains:
    sysctl: {description: key to runtime value, type: dict}
    sysctl_missing: {description: asked-for keys the kernel does not have, type: list}
    mounts: {description: 'mount point to source, fstype and options', type: dict}
    setid: {description: SUID/SGID files, type: list}
    sockets: {description: 'listening sockets with protocol, address, port and processes', type: list}
    audit_rules: {description: loaded audit rules as auditctl -l prints them, type: list}
    audit_enabled: {description: the enabled flag of auditctl -s (2 is immutable), type: int}
    nft_digest: {description: sha256 of nft list ruleset without handles, type: str}
    sshd: {description: 'effective sshd configuration, keyword to value', type: dict}
    ssh_algorithms: {description: 'ssh -Q output for cipher, mac and kex', type: dict}
    services: {description: unit file to state, type: dict}
    modules: {description: loaded kernel modules, type: list}
    security_updates:
      description: 'installed packages with a newer version from a source matching updates_origins: name,
        installed, version (the newest such), source (the index line of apt-cache policy), spec (name=version)'
      type: list
    unavailable: {description: parts whose tool is missing or refused, type: list}
commands:
  description: The commands that were run, for the audit trail.
  returned: always
  type: list
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.hardening import facts as lib  # noqa: E402


class Reader:
    def __init__(self, module):
        self.module = module
        self.commands = []
        self.unavailable = []

    def run(self, part, argv):
        binary = self.module.get_bin_path(argv[0])
        if not binary:
            self.unavailable.append(part)
            return None
        self.commands.append(" ".join([binary, *argv[1:]]))
        # apt's listings are parsed: untranslated, whatever the host's locale.
        rc, out, _err = self.module.run_command([binary, *argv[1:]], environ_update={"LC_ALL": "C", "LANG": "C"})
        if rc != 0:
            self.unavailable.append(part)
            return None
        return out

    @staticmethod
    def read(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def gather_sysctl(reader, keys, facts):
    if not keys:
        out = reader.run("sysctl", ["sysctl", "-a"])
        facts["sysctl"] = lib.parse_sysctl(out) if out is not None else None
        return
    values, missing = {}, []
    for key in keys:
        path = lib.sysctl_path(key)
        if not os.path.exists(path):
            missing.append(key)
            continue
        try:
            values[key] = " ".join(reader.read(path).split())
        except OSError:
            missing.append(key)
    facts["sysctl"] = values
    facts["sysctl_missing"] = missing


def gather_updates(reader, patterns, facts):
    # Debug::NoLocking: the simulation only reads, and must not wait for (or
    # block) the daily apt job's lock.
    simulation = reader.run("updates", ["apt-get", "-s", "-o", "Debug::NoLocking=true", "dist-upgrade"])
    sources = reader.run("updates", ["apt-cache", "policy"])
    if simulation is None or sources is None:
        facts["security_updates"] = None
        return
    upgrades = lib.parse_apt_simulation(simulation)
    policy = reader.run("updates", ["apt-cache", "policy", *sorted(upgrades)]) if upgrades else ""
    distro_id, codename = lib.distro_of(reader.read("/etc/os-release"))
    facts["security_updates"] = lib.pending_security_updates(
        upgrades,
        lib.parse_apt_policy_versions(policy or ""),
        lib.parse_apt_sources(sources),
        patterns,
        distro_id,
        codename,
    )


def main():
    module = AnsibleModule(
        argument_spec={
            "gather": {
                "type": "list",
                "elements": "str",
                "default": ["sysctl", "mounts", "modules", "sshd", "services"],
                "choices": [
                    "sysctl",
                    "mounts",
                    "setid",
                    "sockets",
                    "audit_rules",
                    "nft_digest",
                    "sshd",
                    "ssh_algorithms",
                    "services",
                    "modules",
                    "updates",
                ],
            },
            "sysctl_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
            "setid_roots": {
                "type": "list",
                "elements": "path",
                "default": ["/usr", "/bin", "/sbin", "/opt", "/srv", "/home"],
            },
            "updates_origins": {
                "type": "list",
                "elements": "str",
                "default": ["origin=Debian,codename=${distro_codename}-security,label=Debian-Security"],
            },
        },
        supports_check_mode=True,
    )
    gather = set(module.params["gather"])
    reader = Reader(module)
    facts = {}

    if "sysctl" in gather:
        gather_sysctl(reader, module.params["sysctl_keys"], facts)
    if "mounts" in gather:
        facts["mounts"] = lib.parse_mounts(reader.read("/proc/self/mounts"))
    if "modules" in gather:
        facts["modules"] = lib.parse_lsmod(reader.read("/proc/modules")) if os.path.exists("/proc/modules") else []
    if "setid" in gather:
        roots = [root for root in module.params["setid_roots"] if os.path.isdir(root)]
        out = reader.run("setid", ["find", *roots, "-xdev", "-type", "f", "-perm", "/6000"]) if roots else ""
        facts["setid"] = lib.parse_find_setid(out or "")
    if "sockets" in gather:
        out = reader.run("sockets", ["ss", "-Hlntup"])
        facts["sockets"] = lib.parse_ss_listening(out) if out is not None else None
    if "audit_rules" in gather:
        out = reader.run("audit_rules", ["auditctl", "-l"])
        facts["audit_rules"] = lib.parse_audit_rules(out) if out is not None else None
        status = reader.run("audit_rules", ["auditctl", "-s"]) or ""
        enabled = [line.split()[1] for line in status.splitlines() if line.startswith("enabled ")]
        facts["audit_enabled"] = int(enabled[0]) if enabled else None
    if "nft_digest" in gather:
        out = reader.run("nft_digest", ["nft", "list", "ruleset"])
        facts["nft_digest"] = lib.ruleset_digest(out) if out is not None else None
    if "sshd" in gather:
        out = reader.run("sshd", ["sshd", "-T"])
        facts["sshd"] = lib.parse_sshd_t(out) if out is not None else None
    if "ssh_algorithms" in gather:
        facts["ssh_algorithms"] = {
            kind: reader.run("ssh_algorithms", ["ssh", "-Q", kind]) or "" for kind in ("cipher", "mac", "kex")
        }
    if "services" in gather:
        out = reader.run("services", ["systemctl", "list-unit-files", "--no-legend", "--plain"])
        facts["services"] = lib.parse_systemctl_unit_files(out) if out is not None else None

    if "updates" in gather:
        try:
            gather_updates(reader, module.params["updates_origins"], facts)
        except ValueError as error:
            module.fail_json(msg=f"updates_origins: {error}", commands=reader.commands)

    facts["unavailable"] = sorted(set(reader.unavailable))
    module.exit_json(changed=False, ansible_facts={"enclave_hardening": facts}, commands=reader.commands)


if __name__ == "__main__":
    main()
