#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: probe egress paths and report each verdict with its evidence."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: egress_probe
short_description: Probe egress over tcp, udp, icmp, dns and http(s) and prove each verdict with evidence
version_added: 0.1.0
description:
  - Tries each target once, from the host or from inside a network namespace (a named one or a
    process's, such as a container's), as root or as a given user, and reports per target whether
    the path is open and why it thinks so.
  - "Verdicts: C(connected) (handshake done or a reply came back), C(refused) (C(ECONNREFUSED): a
    host answered with a TCP reset or an ICMP port unreachable, so the packet got there),
    C(rejected) (C(EPERM)/C(EACCES): a firewall rejected it, usually this host's own), C(timeout)
    (nothing came back in time: dropped, filtered, or nothing answers a datagram) and
    C(unreachable) (C(EHOSTUNREACH)/C(ENETUNREACH): no route). The first two are reachable."
  - The evidence of each verdict is the errno, the duration and, when O(targets[].counter) names a
    counter of the table C(inet enclave), how far that counter moved during the probe (read with
    C(nft -j list counter) before and after, in the same network namespace).
  - A probe that could not even be tried (a network namespace or process that does not exist, a
    user that does not exist, joining the namespace or switching user failed, a socket that cannot
    be opened, an errno that says nothing about the path) is an error that fails the task. It is
    never reported as blocked.
  - Probes only send a handful of packets and change nothing, so they also run in check mode.
  - To join a namespace or switch user, the module forks a child that joins the network namespace
    (C(setns)), reads the counter, forks again to drop to the user (C(setgroups), C(setgid),
    C(setuid)) and probe, and returns the result over a pipe.
author:
  - llm-enclave maintainers (@llm-enclave)
requirements:
  - root on the managed host to join a namespace, switch user, read counters or send raw ICMP
  - nftables (C(nft)) when a target names a counter
attributes:
  check_mode:
    description: The probes run in check mode too; they change nothing.
    support: full
  diff_mode:
    description: Nothing to show.
    support: none
options:
  targets:
    description: What to probe. Names must be unique.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A short label, used in the result and in failure messages.
        type: str
        required: true
      address:
        description:
          - The IPv4 or IPv6 address to probe. Names are refused; for O(targets[].proto=dns) this is
            the resolver's address and the name to ask for goes in O(targets[].query).
        type: str
        required: true
      proto:
        description:
          - C(tcp) connects; C(udp) sends a datagram and waits for any reply; C(icmp) sends an echo
            request (ICMPv6 for an IPv6 address) over a ping socket when
            C(net.ipv4.ping_group_range) allows the gid, else over a raw socket; C(dns) sends a
            query over UDP and waits for the matching answer; C(http) and C(https) connect and send
            a C(HEAD) request (certificates are not checked; reachability is the question).
        type: str
        required: true
        choices: [tcp, udp, icmp, dns, http, https]
      port:
        description: Required for C(tcp) and C(udp); C(dns) 53, C(http) 80, C(https) 443 by default; none for C(icmp).
        type: int
      timeout:
        description: Seconds to wait for the whole probe (more than 0, at most 60).
        type: float
        default: 2.0
      expect:
        description:
          - C(open) expects a reachable verdict (C(connected) or C(refused)); C(blocked) expects
            C(rejected), C(timeout) or C(unreachable). Without it the verdict is only reported.
        type: str
        choices: [open, blocked]
      as_user:
        description:
          - Probe as this user (a name on the host, or a uid); replaces the module's O(as_user).
            A uid that has no entry in the host's user database gets the same number as its gid.
        type: raw
      netns:
        description:
          - Probe inside this named network namespace (C(/run/netns/NAME)). Given with or without
            O(targets[].pid), it replaces both of the module's O(netns) and O(pid).
        type: str
      pid:
        description: Probe inside the network namespace of this process (C(/proc/PID/ns/net)), e.g. a container's.
        type: int
      counter:
        description:
          - The name of a counter of table C(inet enclave), for example C(drop_output), whose
            packet count delta during the probe is reported as evidence.
          - Other traffic in the same namespace during the probe moves it too.
        type: str
      query:
        description: For C(dns), the name to ask for.
        type: str
      qtype:
        description: For C(dns), the record type to ask for.
        type: str
        choices: [A, AAAA]
        default: A
      path:
        description: For C(http) and C(https), the request path.
        type: str
        default: /
      payload:
        description: For C(udp), the text of the datagram.
        type: str
        default: "enclave-probe\n"
  netns:
    description: The named network namespace to probe from, for targets that give none.
    type: str
  pid:
    description: Probe from the network namespace of this process, for targets that give no namespace.
    type: int
  as_user:
    description: The user (name or uid) to probe as, for targets that give none.
    type: raw
  fail_on_mismatch:
    description:
      - Fail the task when a target's verdict contradicts its O(targets[].expect); the message
        names the target, what was expected, what was observed and the evidence.
      - Probes that could not be tried fail the task whatever this says.
    type: bool
    default: true
notes:
  - A local C(reject with tcp reset) rule looks like a remote reset (C(refused)); the policy of the
    C(nftables_policy) module drops, so its blocks show as C(timeout) (TCP) or C(rejected)
    (UDP and ICMP, whose sends fail with C(EPERM)).
  - A datagram that gets no reply is C(timeout) even when the path is open and nothing answers;
    probe a responder, or pair the probe with a counter.
  - User names are resolved on the host; inside a container's namespace give the uid as the host sees it.
seealso:
  - module: enclave.llm.nftables_policy
"""

EXAMPLES = r"""
- name: The mirror is reachable and the internet is not, with the drop counter as evidence
  enclave.llm.egress_probe:
    targets:
      - {name: mirror, address: 198.51.100.10, proto: tcp, port: 3142, expect: open}
      - {name: internet, address: 203.0.113.80, proto: https, expect: blocked, counter: drop_output}
      - {name: any resolver, address: 203.0.113.53, proto: dns, query: example.org, expect: blocked}
      - {name: ping v6, address: "2001:db8:2::80", proto: icmp, expect: blocked}

- name: The inference service's user gets no egress at all, not even to the mirror
  enclave.llm.egress_probe:
    as_user: vllm
    targets:
      - {name: mirror as vllm, address: 198.51.100.10, proto: tcp, port: 3142, expect: blocked, counter: drop_uid}

- name: From inside a container's network namespace, report only
  enclave.llm.egress_probe:
    pid: "{{ container_pid }}"
    fail_on_mismatch: false
    targets:
      - {name: quic-like, address: 203.0.113.80, proto: udp, port: 443, expect: blocked, timeout: 1}
  register: probe

- name: Show the verdicts
  ansible.builtin.debug:
    msg: "{{ probe.probes | map(attribute='verdict') | list }}"
"""

RETURN = r"""
probes:
  description: One result per target, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The target's name.
      type: str
    proto:
      description: The protocol probed.
      type: str
    address:
      description: The address probed (normalised).
      type: str
    port:
      description: The port probed (none for icmp).
      type: int
    netns:
      description: The named network namespace the probe ran in, if any.
      type: str
    pid:
      description: The process whose network namespace the probe ran in, if any.
      type: int
    uid:
      description: The uid the probe ran as when O(targets[].as_user) was given.
      type: int
    reachable:
      description: True for C(connected) and C(refused), false for the other verdicts, null on error.
      type: bool
    verdict:
      description: C(connected), C(refused), C(rejected), C(timeout) or C(unreachable); null on error.
      type: str
      sample: timeout
    errno:
      description: The errno name behind the verdict (null when connected or silent).
      type: str
      sample: EPERM
    errno_number:
      description: The errno number.
      type: int
      sample: 1
    evidence:
      description: What happened and what it means, in a sentence.
      type: str
    detail:
      description:
        - Protocol details. C(socket) (C(dgram) or C(raw)) for icmp; C(rcode) and C(answers) for
          dns; C(reply_bytes) for udp; C(http_status), C(tls_version) or C(http_error) for http(s).
      type: dict
    duration_ms:
      description: How long the probe took, in milliseconds.
      type: float
    counter:
      description: The counter read, if any.
      type: str
    counter_delta:
      description: Packets the counter gained during the probe (null without a counter).
      type: int
    expect:
      description: The expectation, if any.
      type: str
    matched_expectation:
      description: Whether the verdict matches O(targets[].expect); null without an expectation or on error.
      type: bool
    error:
      description: Why the probe could not be tried; present only then, and then there is no verdict.
      type: str
commands:
  description: The external commands run, each in the network namespace of its target (only counter reads).
  returned: always
  type: list
  elements: str
  sample:
    - nft -j list counter inet enclave drop_output
mismatched:
  description: The names of the targets whose verdict contradicts their expectation.
  returned: always
  type: list
  elements: str
"""

import os  # noqa: E402
import pwd  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import egress_probe as lib  # noqa: E402

CHILD_GRACE_S = 15  # beyond a probe's own timeout: counter reads, fork, setns


def resolve_user(value):
    """``((uid, gid, groups), None)``, ``(None, None)`` for no user, or ``(None, message)``."""
    if value is None:
        return None, None
    text = str(value).strip()
    if text.isdigit():
        uid = int(text)
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return (uid, uid, [uid]), None
    else:
        try:
            entry = pwd.getpwnam(text)
        except KeyError:
            return None, f"there is no user {text!r} on this host: create it or give a uid"
    return (entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)), None


def namespace_path(target):
    """``(path or None, problem or None)`` for the target's network namespace."""
    if target["netns"]:
        path = f"/run/netns/{target['netns']}"
        if not os.path.exists(path):
            return None, f"there is no network namespace {target['netns']!r} ({path} is missing; see `ip netns list`)"
        return path, None
    if target["pid"]:
        path = f"/proc/{target['pid']}/ns/net"
        if not os.path.exists(path):
            return None, f"there is no process {target['pid']} ({path} is missing)"
        return path, None
    return None, None


def drop_to(user):
    uid, gid, groups = user
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise RuntimeError(f"cannot switch to uid {uid} gid {gid}: {exc.strerror}") from exc
    if os.getuid() != uid or os.geteuid() != uid:
        raise RuntimeError(f"switching to uid {uid} did not take effect")


def as_user_probe(user, target):
    drop_to(user)
    return lib.probe(target)


def read_counter(nft, name, commands):
    argv = lib.counter_command(nft, name)
    commands.append(shlex.join(argv))
    run = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}, timeout=10, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"reading counter {name} failed: {(run.stderr or run.stdout).strip()}")
    return lib.parse_counter(run.stdout, name)


def probe_here(target, ns_path, user, nft, limit):
    """In the forked child: join the namespace, read the counter, probe (as the user), read it again."""
    commands = []
    where = f"network namespace {target['netns'] or 'of process ' + str(target['pid'])}"
    if ns_path:
        try:
            lib.setns_net(ns_path)
        except OSError as exc:
            return {"error": f"cannot join the {where}: {lib.errno_name(exc.errno)}: {exc.strerror}"}
    try:
        before = read_counter(nft, target["counter"], commands) if target["counter"] else None
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc), "commands": commands}
    result = lib.probe(target) if user is None else lib.in_child(lambda: as_user_probe(user, target), limit)
    if target["counter"] and "error" not in result:
        try:
            result["counter_delta"] = read_counter(nft, target["counter"], commands) - before
        except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
            result = {"error": str(exc)}
    result["commands"] = commands
    return result


def run_target(target, nft):
    report = {
        "name": target["name"],
        "proto": target["proto"],
        "address": target["address"],
        "port": target["port"],
        "netns": target["netns"],
        "pid": target["pid"],
        "uid": None,
        "reachable": None,
        "verdict": None,
        "errno": None,
        "errno_number": None,
        "evidence": "",
        "detail": {},
        "duration_ms": None,
        "counter": target["counter"],
        "counter_delta": None,
        "expect": target["expect"],
        "matched_expectation": None,
    }
    user, problem = resolve_user(target["as_user"])
    if user is not None:
        report["uid"] = user[0]
    ns_path, ns_problem = namespace_path(target)
    problem = problem or ns_problem
    if not problem and target["counter"] and not nft:
        problem = f"counter {target['counter']} needs nft, which is not installed"
    if problem:
        report["error"] = problem
        return report, []
    limit = target["timeout"] + CHILD_GRACE_S
    result = lib.in_child(lambda: probe_here(target, ns_path, user, nft, limit), limit + CHILD_GRACE_S)
    commands = result.pop("commands", [])
    if "error" in result:
        report["error"] = result["error"]
        report["duration_ms"] = result.get("duration_ms")
        return report, commands
    report.update(result)
    report["reachable"] = lib.reachable(result["verdict"])
    report["matched_expectation"] = lib.matched_expectation(target["expect"], result["verdict"])
    return report, commands


def main():
    target_options = {
        "name": {"type": "str", "required": True},
        "address": {"type": "str", "required": True},
        "proto": {"type": "str", "required": True, "choices": list(lib.PROTOS)},
        "port": {"type": "int"},
        "timeout": {"type": "float", "default": lib.DEFAULT_TIMEOUT},
        "expect": {"type": "str", "choices": list(lib.EXPECTS)},
        "as_user": {"type": "raw"},
        "netns": {"type": "str"},
        "pid": {"type": "int"},
        "counter": {"type": "str"},
        "query": {"type": "str"},
        "qtype": {"type": "str", "choices": list(lib.QTYPES), "default": "A"},
        "path": {"type": "str", "default": "/"},
        "payload": {"type": "str", "default": lib.DEFAULT_PAYLOAD},
    }
    module = AnsibleModule(
        argument_spec={
            "targets": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": target_options,
                "mutually_exclusive": [["netns", "pid"]],
            },
            "netns": {"type": "str"},
            "pid": {"type": "int"},
            "as_user": {"type": "raw"},
            "fail_on_mismatch": {"type": "bool", "default": True},
        },
        mutually_exclusive=[["netns", "pid"]],
        supports_check_mode=True,
    )
    params = module.params
    raw_targets = []
    for entry in params["targets"]:
        data = {key: value for key, value in entry.items() if value is not None}
        # Defaults that apply to one protocol only must not trip the others' checks.
        for key, proto in (("qtype", ("dns",)), ("path", ("http", "https")), ("payload", ("udp",))):
            if data.get("proto") not in proto:
                data.pop(key, None)
        raw_targets.append(data)
    defaults = {key: params[key] for key in ("netns", "pid", "as_user")}
    targets, problems = lib.validate_targets(raw_targets, defaults)
    if problems:
        module.fail_json(
            msg="invalid egress_probe targets: " + " ".join(problems),
            problems=problems,
            probes=[],
            commands=[],
            mismatched=[],
        )

    nft = module.get_bin_path("nft") if any(target["counter"] for target in targets) else None
    probes, commands = [], []
    for target in targets:
        report, ran = run_target(target, nft)
        probes.append(report)
        commands.extend(ran)
    result = {
        "changed": False,
        "probes": probes,
        "commands": commands,
        "mismatched": [report["name"] for report in probes if report["matched_expectation"] is False],
    }

    errors = [report for report in probes if "error" in report]
    if errors:
        module.fail_json(
            msg=f"{len(errors)} target(s) could not be probed, so they have no verdict: "
            + "; ".join(f"{report['name']}: {report['error']}" for report in errors),
            **result,
        )
    if result["mismatched"] and params["fail_on_mismatch"]:
        lines = []
        for report in probes:
            if report["matched_expectation"] is False:
                delta = "" if report["counter_delta"] is None else f", {report['counter']} +{report['counter_delta']}"
                lines.append(
                    f"{report['name']}: expected {report['expect']}, observed {report['verdict']} "
                    f"({report['evidence']}; {report['duration_ms']} ms{delta})"
                )
        module.fail_json(
            msg=f"{len(lines)} target(s) did not match their expectation: " + "; ".join(lines),
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
