# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Canary probes from the three places a leak could start: the host, the service user, the container.

Each probe is ``egress_probe.probe`` run in a forked child that first joins the
container's network namespace or drops to the service user, so the monitor
itself never changes namespace or identity. The container is found without
Podman (whose rootless state the hardened service may not touch): the account's
conmon process carries the container's name (``-n NAME``) and its child is the
container's first process.
"""

from __future__ import annotations

import os
import pwd

from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import egress_probe

CHILD_GRACE_S = 5.0


def conmon_container(cmdline_args, name):
    """True when a conmon command line (argv list) runs the container ``name``."""
    for index, arg in enumerate(cmdline_args[:-1]):
        if arg in ("-n", "--name") and cmdline_args[index + 1] == name:
            return True
    return any(arg == f"--name={name}" for arg in cmdline_args)


def container_pid(name, uid, proc="/proc"):
    """The first process of the container ``name`` run by ``uid``, or None when it does not run."""
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"{proc}/{entry}").st_uid != uid:
                continue
            with open(f"{proc}/{entry}/comm", encoding="utf-8") as handle:
                if handle.read().strip() != "conmon":
                    continue
            with open(f"{proc}/{entry}/cmdline", "rb") as handle:
                args = [arg.decode(errors="replace") for arg in handle.read().split(b"\x00") if arg]
            if not conmon_container(args, name):
                continue
            with open(f"{proc}/{entry}/task/{entry}/children", encoding="utf-8") as handle:
                children = handle.read().split()
        except OSError:
            continue  # the process ended while we looked
        if children:
            return int(children[0])
    return None


def _drop_to(user):
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    if os.geteuid() != user.pw_uid:
        raise RuntimeError(f"switching to uid {user.pw_uid} did not take effect")


def probe_all(targets, netns_path=None, user=None):
    """Probe every target in one child (joined to ``netns_path``, as ``user``); one result per target."""

    def work():
        if netns_path:
            egress_probe.setns_net(netns_path)
        if user is not None:
            _drop_to(user)
        return {"results": [egress_probe.probe(target) for target in targets]}

    limit = sum(target["timeout"] for target in targets) + CHILD_GRACE_S
    outcome = egress_probe.in_child(work, limit)
    if "error" in outcome:
        return [{"error": outcome["error"]} for _target in targets]
    return outcome["results"]


def probe_own_namespace(target):
    """A canary that names its own namespace (netns or pid) is probed there only, as root."""
    path = f"/run/netns/{target['netns']}" if target.get("netns") else f"/proc/{target['pid']}/ns/net"
    if not os.path.exists(path):
        return {"error": f"the canary's network namespace {path} is gone"}
    return probe_all([target], netns_path=path)[0]


def service_user(name):
    """The passwd entry of the service account; KeyError when it does not exist."""
    return pwd.getpwnam(name)
