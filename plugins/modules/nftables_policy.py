#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: own the nftables table ``inet enclave`` from a structured policy."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nftables_policy
short_description: Own the nftables table C(inet enclave) from a structured, validated policy
version_added: 0.1.0
description:
  - Renders a structured policy (zones, ingress rules, an egress allowlist, per-uid and per-group
    denial, logging) into the table C(inet enclave) with C(policy drop) on the input, output and
    forward base chains, and applies it in one atomic C(nft -f) transaction that replaces
    only that table. Other tables (podman, docker, the distribution's) are never flushed;
    a drop in this table's base chains is final, whatever they accept.
  - Checks the rendered ruleset with C(nft -c -f) before applying it.
  - Compares the live table with the policy semantically, as normalised C(nft -j) JSON that ignores
    handles, counter values and set element order, so a second run reports no change.
    The policy's JSON form is obtained by loading it into a throwaway network namespace
    (C(unshare --net)); nothing on the host changes while comparing.
  - Every drop path (input, output, forward, per-uid and per-group, invalid, forged source,
    no route back) logs at a limited rate and counts into a named counter (C(drop_input),
    C(drop_output), C(drop_forward), C(drop_uid), C(drop_invalid), C(drop_spoof), C(drop_rpf))
    that probes can read.
  - A new packet leaving with a source address that is not the host's own on the outgoing
    interface goes to C(drop_spoof) (C(fib saddr . oif type != local)), before anything new is
    accepted, so an allowed endpoint cannot be made to answer a forged address. Only IPv6
    duplicate address detection, from C(::) to a multicast group, leaves before that check.
  - A new packet arriving on an interface that is not the route back to its source goes to
    C(drop_rpf) (C(fib saddr . iif oif missing)), before the zones' ingress rules.
  - With O(protect_client), refuses a policy that would drop the controller's next SSH connection.
  - Does not persist the ruleset across reboots and does not roll back; the C(firewall) role does.
author:
  - llm-enclave maintainers (@llm-enclave)
requirements:
  - nftables (C(nft)) 1.0 or later, and C(unshare) from util-linux, on the managed host
  - root on the managed host
attributes:
  check_mode:
    description: Validates, compares and reports the diff; the host's ruleset is not changed.
    support: full
  diff_mode:
    description: Shows the change as a diff of the listed table before and after.
    support: full
options:
  state:
    description:
      - C(present) makes the table match the policy; C(absent) deletes the table.
    type: str
    choices: [present, absent]
    default: present
  zones:
    description:
      - Source networks per zone, as CIDRs (IPv4 or IPv6, host bits clear) or single addresses.
        Each zone becomes a named set (C(zone_ZONE_v4), C(zone_ZONE_v6)).
      - C(admin) must not be empty when O(state=present).
    type: dict
    default: {}
    suboptions:
      admin:
        description: Networks the administrators connect from.
        type: list
        elements: str
        default: []
      clinical:
        description: Networks of the clinical clients of the inference API.
        type: list
        elements: str
        default: []
      cluster:
        description: Addresses of the other members of a multi-node cluster.
        type: list
        elements: str
        default: []
  ingress:
    description:
      - Inbound rules; each opens ports to one zone. Nothing else is accepted inbound
        except loopback, replies, the ICMP errors and neighbour discovery IP needs.
    type: list
    elements: dict
    default: []
    suboptions:
      zone:
        description: The zone allowed in, one of C(admin), C(clinical), C(cluster).
        type: str
      proto:
        description: C(tcp) or C(udp).
        type: str
      ports:
        description: Ports (C(22)) and ranges (C(8000-8100)).
        type: list
        elements: raw
      comment:
        description: A short note shown on the rule in C(nft list).
        type: str
  egress:
    description:
      - The egress allowlist. Each entry becomes elements of the named set C(egress_v4) or
        C(egress_v6) (type C(ADDR . inet_proto . inet_service), interval), one lookup per
        packet however many entries there are. Everything not listed is dropped.
      - Overlapping entries are refused (the kernel refuses overlapping set elements);
        identical ones are merged, their owners and reasons kept in the element comment.
    type: list
    elements: dict
    default: []
    suboptions:
      destination:
        description: An IPv4/IPv6 address or CIDR; names are refused (the host has no DNS).
        type: str
      proto:
        description: C(tcp) or C(udp).
        type: str
      ports:
        description: Ports and ranges, e.g. C([123]) or C(["8000-8100"]).
        type: list
        elements: raw
        aliases: [port]
      owner:
        description: Required. Who answers for this flow.
        type: str
      reason:
        description: Required. Why the host needs this flow.
        type: str
  deny_egress_uids:
    description:
      - Users (uids, or names resolved on the host) whose sockets get no traffic except loopback,
        not even replies (C(meta skuid), checked before the allowlist). Serve them through a
        Unix socket or loopback.
    type: list
    elements: raw
    default: []
  deny_egress_gids:
    description:
      - Groups (gids, or names resolved on the host) whose sockets get no traffic except loopback
        (C(meta skgid), beside O(deny_egress_uids)). A setuid-root program run by a service account
        opens sockets as uid 0 but keeps the account's gid, so list the account's own group here.
      - Refused when the group is shared, that is another user not in O(deny_egress_uids) has it as
        primary group or is a member (that user would lose its network too), and for gid 0. A group
        that is no primary group of a user in O(deny_egress_uids) gets a warning (it guards nothing).
    type: list
    elements: raw
    default: []
  log:
    description: Logging of dropped packets (one rate limit per drop path).
    type: dict
    default: {}
    suboptions:
      rate:
        description: Packets logged per unit of time, C(N/second|minute|hour|day).
        type: str
        default: 10/minute
      burst:
        description: Packets logged in a burst before the rate applies.
        type: int
        default: 5
      prefix:
        description: Start of the log prefix; the drop path follows (C(enclave drop output:)).
        type: str
        default: enclave
  families:
    description:
      - The address families the host uses. An address of a family not listed is refused
        (for example an IPv6 destination on an IPv4-only host). Traffic of an unlisted
        family is still dropped.
    type: list
    elements: str
    choices: [ipv4, ipv6]
    default: [ipv4, ipv6]
  protect_client:
    description:
      - The address the controller connects from, as the host sees it (the first field of
        C(SSH_CONNECTION)). When set, a policy under which a new SSH connection from this
        address to O(protect_port) would be dropped is refused before anything runs, so a
        run cannot lock out the session that makes it.
      - The policy keeps the session when a tcp O(ingress) rule covering O(protect_port) belongs
        to a zone holding this address (normally C(admin)).
    type: str
  protect_port:
    description:
      - The host's SSH port checked with O(protect_client) (the fourth field of C(SSH_CONNECTION)).
    type: int
    default: 22
  max_entries:
    description:
      - The most set elements (egress destination/port pairs, zone networks and uids) the
        policy may have; a larger policy is refused before anything is run.
    type: int
    default: 20000
notes:
  - The transaction starts with C(table inet enclave {}) and C(delete table inet enclave), so it
    works whether or not the table exists and never touches another table.
seealso:
  - name: Atomic rule replacement
    description: The nftables wiki on replacing a ruleset in one transaction.
    link: https://wiki.nftables.org/wiki-nftables/index.php/Atomic_rule_replacement
"""

EXAMPLES = r"""
- name: Default deny with SSH for admins, the API for clinical nets and the mirror as the only egress
  enclave.llm.nftables_policy:
    zones:
      admin: [192.0.2.0/24]
      clinical: [203.0.113.0/24, "2001:db8:20::/48"]
    ingress:
      - {zone: admin, proto: tcp, ports: [22]}
      - {zone: clinical, proto: tcp, ports: [443], comment: inference API}
    egress:
      - destination: 198.51.100.10
        proto: tcp
        ports: [80, 3142, 5000]
        owner: hospital-it
        reason: offline mirror (apt, registry, weights)
      - destination: 198.51.100.11
        proto: udp
        ports: [123]
        owner: hospital-it
        reason: NTP
    deny_egress_uids: [vllm]
    deny_egress_gids: [vllm]

- name: Refuse a policy that would lock out the controller's SSH session
  enclave.llm.nftables_policy:
    zones: {admin: [192.0.2.0/24]}
    ingress: [{zone: admin, proto: tcp, ports: [22]}]
    protect_client: "{{ ansible_facts.env.SSH_CONNECTION.split()[0] }}"
    protect_port: "{{ ansible_facts.env.SSH_CONNECTION.split()[3] }}"

- name: Show what would change without applying it
  enclave.llm.nftables_policy:
    zones: {admin: [192.0.2.0/24]}
    ingress: [{zone: admin, proto: tcp, ports: [22]}]
  check_mode: true
  diff: true

- name: Remove the table (the host is then open unless another table closes it)
  enclave.llm.nftables_policy:
    state: absent
"""

RETURN = r"""
commands:
  description: The commands run, in order, including the checks; the rendered file is named by its path.
  returned: always
  type: list
  elements: str
  sample:
    - nft -c -f /tmp/enclave-nft-x/enclave.nft
    - nft -j list table inet enclave
    - nft -f /tmp/enclave-nft-x/enclave.nft
rendered:
  description: The nft text of the transaction (empty for O(state=absent)).
  returned: always
  type: str
diff:
  description: The change as a unified diff of C(nft -s list table inet enclave) before and after.
  returned: always
  type: dict
  contains:
    prepared:
      description: The unified diff text (empty when nothing changes).
      type: str
elements:
  description: The number of set elements the policy has.
  returned: when O(state=present)
  type: int
"""

import grp  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import nftables_policy as lib  # noqa: E402

LIST_JSON = ["-j", "list", "table", lib.FAMILY, lib.TABLE]
LIST_TEXT = ["-s", "list", "table", lib.FAMILY, lib.TABLE]
SEPARATOR = "----8<----"


class Runner:
    """Runs commands through the module and records them."""

    def __init__(self, module):
        self.module = module
        self.nft = module.get_bin_path("nft", required=True)
        self.commands = []

    def run(self, argv, record=True):
        if record:
            self.commands.append(shlex.join(argv))
        return self.module.run_command(argv, environ_update={"LC_ALL": "C"})

    def live(self):
        """Return ``(json_text, text)`` of the live table, or ``(None, "")`` when it is absent."""
        rc, out, err = self.run([self.nft, *LIST_JSON])
        if rc != 0:
            if "No such file or directory" in err or "does not exist" in err:
                return None, ""
            self.fail(f"listing table {lib.TABLE_SPEC} failed", rc, out, err)
        rc, text, err = self.run([self.nft, *LIST_TEXT])
        if rc != 0:
            self.fail(f"listing table {lib.TABLE_SPEC} failed", rc, text, err)
        return out, text

    def throwaway(self, path):
        """Load ``path`` into a new, empty network namespace and list it there: (json_text, text)."""
        unshare = self.module.get_bin_path("unshare", required=True)
        script = f'"$0" -f "$1" && "$0" {" ".join(LIST_JSON)} && echo "{SEPARATOR}" && "$0" {" ".join(LIST_TEXT)}'
        rc, out, err = self.run([unshare, "--net", "--", "/bin/sh", "-c", script, self.nft, path])
        if rc != 0 or SEPARATOR not in out:
            self.fail("loading the rendered ruleset into a throwaway network namespace failed", rc, out, err)
        json_text, _separator, text = out.partition(SEPARATOR + "\n")
        return json_text, text

    def fail(self, msg, rc, out, err, **extra):
        self.module.fail_json(msg=f"{msg}: {err.strip() or out.strip()}", rc=rc, commands=self.commands, **extra)


def resolve_uids(module, values):
    """uids stay as they are; user names become the host's uid (unknown names fail)."""
    result = []
    for value in values or []:
        if isinstance(value, str) and value.strip() and not value.strip().isdigit():
            try:
                result.append(pwd.getpwnam(value.strip()).pw_uid)
            except KeyError:
                module.fail_json(
                    msg=f"deny_egress_uids: there is no user {value!r} on this host: create it first or give its uid."
                )
        else:
            result.append(value)
    return result


def resolve_gids(module, values):
    """gids stay as they are; group names become the host's gid (unknown names fail)."""
    result = []
    for value in values or []:
        if isinstance(value, str) and value.strip() and not value.strip().isdigit():
            try:
                result.append(grp.getgrnam(value.strip()).gr_gid)
            except KeyError:
                module.fail_json(
                    msg=f"deny_egress_gids: there is no group {value!r} on this host: create it first or give its gid.",
                    commands=[],
                )
        else:
            result.append(value)
    return result


def shared_group_problem(gids, uids):
    """Message when a denied gid is also the group of a user whose egress is not denied ('' otherwise)."""
    denied = {int(uid) for uid in uids if str(uid).strip().isdigit()}
    for gid in gids:
        if not str(gid).strip().isdigit() or int(gid) == 0:
            continue  # the library names the fault
        gid = int(gid)
        others = sorted({user.pw_name for user in pwd.getpwall() if user.pw_gid == gid and user.pw_uid not in denied})
        try:
            group = grp.getgrgid(gid)
        except KeyError:
            name, members = str(gid), []
        else:
            name, members = group.gr_name, group.gr_mem
        for member in members:
            try:
                if pwd.getpwnam(member).pw_uid not in denied:
                    others.append(member)
            except KeyError:
                others.append(member)
        if others:
            return (
                f"deny_egress_gids: the group {name} ({gid}) is shared with {', '.join(sorted(set(others)))}, "
                "whose egress is not denied: their sockets would lose the network too. Give the service account "
                "a group of its own (no other user with it as primary group or as a member), or add those users "
                "to deny_egress_uids; nothing was applied."
            )
    return ""


def unguarded_group_warnings(gids, uids):
    """Warnings for denied gids that no denied user has as primary group: they guard nothing."""
    denied = {int(uid) for uid in uids if str(uid).strip().isdigit()}
    primary = {user.pw_gid for user in pwd.getpwall() if user.pw_uid in denied}
    return [
        f"deny_egress_gids: {gid} is no primary group of a user in deny_egress_uids; a setuid program keeps its "
        "caller's primary gid, so list each service account's own group (`id -gn USER`)."
        for gid in gids
        if str(gid).strip().isdigit() and int(gid) != 0 and int(gid) not in primary
    ]


def policy_from_params(module):
    params = module.params
    egress = []
    for entry in params["egress"] or []:
        egress.append({key: value for key, value in entry.items() if value is not None})
    ingress = [{key: value for key, value in rule.items() if value is not None} for rule in params["ingress"] or []]
    uids = resolve_uids(module, params["deny_egress_uids"])
    gids = resolve_gids(module, params["deny_egress_gids"])
    problem = shared_group_problem(gids, uids)
    if problem:
        module.fail_json(msg=problem, problems=[problem], commands=[])
    for warning in unguarded_group_warnings(gids, uids):
        module.warn(warning)
    return {
        "zones": {key: value for key, value in (params["zones"] or {}).items() if value is not None},
        "ingress": ingress,
        "egress": egress,
        "deny_egress_uids": uids,
        "deny_egress_gids": gids,
        "log": {key: value for key, value in (params["log"] or {}).items() if value is not None},
        "families": params["families"],
    }


def run_present(module, runner, result, workdir):
    policy = policy_from_params(module)
    compiled, problems = lib.compile_policy(policy, module.params["max_entries"])
    if problems:
        module.fail_json(msg="invalid nftables policy: " + " ".join(problems), problems=problems, commands=[])
    if module.params["protect_client"]:
        address, port, lockout = lib.parse_session(module.params["protect_client"], module.params["protect_port"])
        lockout = lockout or lib.compiled_lockout_problem(compiled, address, port)
        if lockout:
            module.fail_json(msg=lockout, problems=[lockout], commands=[])
    rendered = lib.render_compiled(compiled)
    result["rendered"] = rendered
    result["elements"] = compiled["elements"]
    path = os.path.join(workdir, "enclave.nft")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(rendered)

    rc, out, err = runner.run([runner.nft, "-c", "-f", path])
    if rc != 0:
        runner.fail("nft -c refused the rendered ruleset", rc, out, err, rendered=rendered)
    live_json, live_text = runner.live()
    want_json, want_text = runner.throwaway(path)

    result["changed"] = lib.normalise_ruleset(live_json or "") != lib.normalise_ruleset(want_json)
    result["diff"] = {"prepared": lib.ruleset_diff(live_text, want_text) if result["changed"] else ""}
    if not result["changed"] or module.check_mode:
        return

    rc, out, err = runner.run([runner.nft, "-f", path])
    if rc != 0:
        runner.fail("applying the ruleset failed; the transaction was not committed", rc, out, err, rendered=rendered)
    after_json, _after_text = runner.live()
    if lib.normalise_ruleset(after_json or "") != lib.normalise_ruleset(want_json):
        module.fail_json(
            msg=f"the ruleset was applied but table {lib.TABLE_SPEC} does not match the policy afterwards; "
            "another process may have changed it at the same time: run again.",
            commands=runner.commands,
            rendered=rendered,
        )


def run_absent(module, runner, result):
    live_json, live_text = runner.live()
    result["changed"] = live_json is not None
    result["diff"] = {"prepared": lib.ruleset_diff(live_text, "") if result["changed"] else ""}
    if result["changed"] and not module.check_mode:
        rc, out, err = runner.run([runner.nft, "delete", "table", lib.FAMILY, lib.TABLE])
        if rc != 0:
            runner.fail(f"deleting table {lib.TABLE_SPEC} failed", rc, out, err)


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "zones": {
                "type": "dict",
                "default": {},
                "options": {
                    "admin": {"type": "list", "elements": "str", "default": []},
                    "clinical": {"type": "list", "elements": "str", "default": []},
                    "cluster": {"type": "list", "elements": "str", "default": []},
                },
            },
            "ingress": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "zone": {"type": "str"},
                    "proto": {"type": "str"},
                    "ports": {"type": "list", "elements": "raw"},
                    "comment": {"type": "str"},
                },
            },
            "egress": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "destination": {"type": "str"},
                    "proto": {"type": "str"},
                    "ports": {"type": "list", "elements": "raw", "aliases": ["port"]},
                    "owner": {"type": "str"},
                    "reason": {"type": "str"},
                },
            },
            "deny_egress_uids": {"type": "list", "elements": "raw", "default": []},
            "deny_egress_gids": {"type": "list", "elements": "raw", "default": []},
            "log": {
                "type": "dict",
                "default": {},
                "options": {
                    "rate": {"type": "str", "default": "10/minute"},
                    "burst": {"type": "int", "default": 5},
                    "prefix": {"type": "str", "default": "enclave"},
                },
            },
            "families": {"type": "list", "elements": "str", "choices": ["ipv4", "ipv6"], "default": ["ipv4", "ipv6"]},
            "max_entries": {"type": "int", "default": lib.DEFAULT_MAX_ENTRIES},
            "protect_client": {"type": "str"},
            "protect_port": {"type": "int", "default": 22},
        },
        supports_check_mode=True,
    )
    result = {"changed": False, "commands": [], "rendered": "", "diff": {"prepared": ""}}
    runner = Runner(module)
    result["commands"] = runner.commands
    workdir = tempfile.mkdtemp(prefix="enclave-nft-")
    try:
        if module.params["state"] == "present":
            run_present(module, runner, result, workdir)
        else:
            run_absent(module, runner, result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
