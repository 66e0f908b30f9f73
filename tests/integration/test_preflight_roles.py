"""Every role's bad settings are refused by the preflight, before any role runs.

The cases are some of those each role refuses when it runs alone
(test_vllm_bad_inputs.py, test_ingress_bad_inputs.py,
test_platform_bad_inputs.py, test_hardening_bad_inputs.py) and a few of the
model store's and the isolation monitor's. Here they all go through the
preflight's own role checks (roles/preflight/tasks/roles.yml, after its fact
gathering) in one ansible-playbook run: one inventory host per case, each an
alias of the same unprovisioned lab target, plus one with the lab's settings
as the control. Each bad host must fail once with its message; the control
must pass; the target's state digest must not change.

Cases that change the host before they run (a foreign /etc/subuid entry, a
fake PCI bus) stay with their role's own test: here every host shares one
target.
"""

from __future__ import annotations

import re

import pytest
import test_hardening_bad_inputs
import test_ingress_bad_inputs
import test_platform_bad_inputs
import test_vllm_bad_inputs
import yaml
from lab_host import LAB_SSH_KEY, REPO, squash

pytestmark = pytest.mark.lab

CONTROL = "lab_settings"

# What every host gets over the lab's group_vars, before its case: the
# ingress cases' upstream key (and the target's own address for the ingress,
# since the lab's clinical address is on another container).
BASE = {"vllm_api_key": test_ingress_bad_inputs.GOOD_UPSTREAM_KEY}

MORE_CASES = [
    pytest.param(
        {"isolation_monitor_interfaces": ["lo", "eth0", "eth9"]},
        ["isolation_monitor_interfaces names eth9, which this host does not have"],
        id="monitor_interface_absent",
    ),
    pytest.param(
        {"isolation_monitor_interfaces": ["lo"], "isolation_monitor_default_routes": []},
        ["isolation_monitor_interfaces leaves out eth0 of this host's interfaces", "stop serving"],
        id="monitor_interface_left_out",
    ),
    pytest.param(
        {"isolation_monitor_interval": 0.1},
        ["isolation_monitor_interval"],
        id="monitor_interval_too_short",
    ),
    pytest.param(
        {"model_store_keep_revisions": -1},
        ["model_store_keep_revisions -1 must be a whole number >= 0"],
        id="model_store_keep_negative",
    ),
    pytest.param(
        {"model_store_root": "/"},
        ["model_store_root '/' must be an absolute folder other than /"],
        id="model_store_root_slash",
    ),
    pytest.param(
        {"model_store_keyring": ["/nonexistent/model-signing.gpg"]},
        ["model_store_keyring: missing on the controller: /nonexistent/model-signing.gpg"],
        id="model_store_key_missing",
    ),
]


# A few of each role's cases: every host costs this 2-core controller
# about 3.5 s, as much as one run of the role alone, and those runs
# (test_*_bad_inputs.py) keep every case.
FROM_ROLE_TESTS = {
    test_vllm_bad_inputs: ("api_key_shorter_than_32_bytes", "log_level_debug"),
    test_ingress_bad_inputs: ("chain_out_of_order", "allowlist_with_metrics", "listen_address_any"),
    test_hardening_bad_inputs: ("allow_groups_lock_out_the_admin", "ssh_cipher_unknown", "auditd_disk_action_invalid"),
    test_platform_bad_inputs: (
        "registry_wildcard",
        "signing_key_missing",
        "gpus_expected_but_none_on_the_bus",
        "driver_version_off_branch",
    ),
}


def role_cases():
    """``{host name: (settings, fragments)}``: the chosen cases of the role tests and MORE_CASES."""
    cases = {param.id: param.values for param in MORE_CASES}
    for module, chosen in FROM_ROLE_TESTS.items():
        found = {param.id: param.values for param in module.CASES if param.id in chosen}
        assert sorted(found) == sorted(chosen), f"{module.__name__} has no case {set(chosen) - set(found)}"
        for name, values in found.items():
            # The platform cases also name the playbook, a setup and a cleanup.
            extra, fragments = (values[1], values[2]) if len(values) == 5 else values
            cases[f"{module.__name__.removeprefix('test_').removesuffix('_bad_inputs')}-{name}"] = (extra, fragments)
    return cases


def run_role_checks(target, tmp_path, hosts):
    """The preflight's fact gathering and role checks, one inventory host per entry of ``hosts``."""
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
    members = {
        name: {
            **BASE,
            "ingress_listen_address": target.address,
            **settings,
            "ansible_host": target.address,
            "ansible_ssh_private_key_file": str(LAB_SSH_KEY),
        }
        for name, settings in hosts.items()
    }
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"llm_servers": {"hosts": members}}, sort_keys=False))
    play = tmp_path / "role_checks.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "The preflight's role checks, each host on its own",
                    "hosts": "llm_servers",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": f"Preflight | {part}",
                            "ansible.builtin.include_role": {"name": "enclave.llm.preflight", "tasks_from": part},
                        }
                        for part in ("gather_facts.yml", "roles.yml")
                    ],
                }
            ]
        )
    )
    # Every host is the same sshd: stay under its ten sessions per connection.
    return target.run_playbook(play, inventory=inventory, extra_env={"ANSIBLE_FORKS": "8"}, timeout=900)


def failure_of(name, output):
    """The text of host ``name``'s failure, or None."""
    found = re.search(
        rf"fatal: \[{re.escape(name)}\]: FAILED! => (.*?)"
        r"(?=fatal: \[|ok: \[|skipping: \[|included: |TASK \[|PLAY RECAP)",
        output,
        flags=re.DOTALL,
    )
    return found.group(1) if found else None


def test_every_roles_bad_settings_are_refused_in_the_preflight(target, tmp_path):
    cases = role_cases()
    assert len(cases) >= 15
    before = target.state_digest()
    settings = {name: extra for name, (extra, _fragments) in cases.items()}
    result = run_role_checks(target, tmp_path, {CONTROL: {}, **settings})
    after = target.state_digest()
    output = result.stdout + result.stderr
    tail = output[-4000:]

    control = re.search(rf"^{CONTROL}\s*:.*$", result.stdout, flags=re.MULTILINE)
    assert control, tail
    assert "failed=0" in control.group(0), failure_of(CONTROL, output) or tail
    assert "unreachable=0" in control.group(0), tail
    assert "changed=0" in control.group(0), tail
    for task in ("the ingress's address", "vLLM's image", "the isolation monitor's", "the hardening's"):
        assert f"Preflight | ROLES | {task}" in output, f"{task!r} did not run\n{tail}"

    wrong = []
    for name, (_extra, fragments) in cases.items():
        recap = re.search(rf"^{re.escape(name)}\s*:.*$", result.stdout, flags=re.MULTILINE)
        failure = failure_of(name, output)
        if not recap or "failed=1" not in recap.group(0) or failure is None:
            wrong.append(f"{name}: not refused ({recap.group(0) if recap else 'no recap'})")
            continue
        missing = [f for f in fragments if squash(f) not in squash(failure.replace("''", "'"))]
        if missing:
            wrong.append(f"{name}: message lacks {missing!r}: {squash(failure)[:600]}")
    assert not wrong, "\n".join(wrong)

    assert "BEGIN PRIVATE KEY" not in output, "a private key reached the output"
    keys = {BASE["vllm_api_key"]} | {extra["vllm_api_key"] for extra in settings.values() if "vllm_api_key" in extra}
    assert not [key for key in keys if key in output], "vLLM's API key reached the output"
    assert before == after, "the role checks changed the host"
