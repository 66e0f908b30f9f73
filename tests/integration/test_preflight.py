"""The preflight play against a real host: bad inventories fail, the lab passes.

Each file in bad_inventories/ is one bad inventory: YAML holding only what
differs from the lab's inventories/lab/group_vars/all/enclave.yml (mappings are
merged key by key, a null value removes the key, lists replace), and one or
more ``# expect: <fragment>`` header lines with text the failure message must
contain. The test merges it over the lab variables, passes the result with
``-e @file``, and checks that the play fails with exactly one failure message
containing the fragments and that the host's state digest did not change.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAB_VARS = REPO / "inventories" / "lab" / "group_vars" / "all" / "enclave.yml"
CASES = sorted((Path(__file__).parent / "bad_inventories").glob("*.yml"))


def merge(base, override):
    """Deep-merge ``override`` into a copy of ``base`` (None deletes a key)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def stage(path):
    """``vars`` for a case refused by the variable checks alone (``# stage: vars``), else ''."""
    match = re.search(r"^# stage: (\w+)$", path.read_text(), flags=re.MULTILINE)
    return match.group(1) if match else ""


VARS_CASES = [case for case in CASES if stage(case) == "vars"]


def load_case(path):
    text = path.read_text()
    expected = [m.strip() for m in re.findall(r"^# expect: (.+)$", text, flags=re.MULTILINE)]
    assert expected, f"{path.name} has no '# expect:' line"
    return yaml.safe_load(text) or {}, expected


def squash(text):
    return " ".join(text.split())


def describe(result):
    return f"$ {result.command}\nrc={result.returncode}\n{result.stdout}\n{result.stderr}"


@pytest.mark.lab
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_bad_inventory_fails_with_one_message_and_changes_nothing(target, case, tmp_path):
    override, expected = load_case(case)
    extra_vars = merge(yaml.safe_load(LAB_VARS.read_text()), override)
    vars_file = tmp_path / case.name
    vars_file.write_text("---\n" + yaml.safe_dump(extra_vars, sort_keys=False))

    before = target.state_digest()
    result = target.run_preflight("-e", f"@{vars_file}")
    after = target.state_digest()

    output = result.stdout + result.stderr
    assert result.returncode != 0, describe(result)
    assert output.count("fatal: [") == 1, describe(result)
    assert len(re.findall(r"failed=[1-9]", result.stdout)) == 1, describe(result)
    assert "UNREACHABLE" not in output, describe(result)
    for fragment in expected:
        assert squash(fragment) in squash(output), f"missing {fragment!r}\n{describe(result)}"
    assert before == after, f"{case.stem} changed the host\n{describe(result)}"


def run_vars_checks(tmp_path, host_vars):
    """One ansible-playbook run of the preflight's variable checks, one local host per entry of ``host_vars``."""
    hosts = {
        name: {**values, "ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        for name, values in host_vars.items()
    }
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
    play = tmp_path / "play.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Preflight variable checks",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Validate the inventory variables",
                            "ansible.builtin.include_role": {
                                "name": "enclave.llm.preflight",
                                "tasks_from": "validate_vars.yml",
                            },
                        }
                    ],
                }
            ]
        )
    )
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(play)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_vars_cases_are_refused_by_the_variable_checks(tmp_path):
    """Every ``# stage: vars`` case, all in one run: each host fails at the variable checks, naming the variable."""
    lab = yaml.safe_load(LAB_VARS.read_text())
    cases = {case.stem: load_case(case) for case in VARS_CASES}
    hosts = {name: merge(lab, override) for name, (override, _expected) in cases.items()}
    hosts["lab_inventory"] = lab
    result = run_vars_checks(tmp_path, hosts)
    output = squash(result.stdout + result.stderr)
    for name, (_override, expected) in cases.items():
        recap = re.search(rf"^{name}\s*:.*$", result.stdout, flags=re.MULTILINE)
        assert recap, f"{name} did not run\n{result.stdout}"
        assert "failed=1" in recap.group(0), f"{name} was not refused\n{result.stdout}"
        fatal = re.search(rf"fatal: \[{name}\]: FAILED! => (.*?)(?=fatal: \[|PLAY RECAP)", output)
        assert fatal, f"{name}: no failure message\n{result.stdout}"
        for fragment in expected:
            assert squash(fragment) in squash(fatal.group(1).replace("''", "'")), f"{name}: missing {fragment!r}"
    recap = re.search(r"^lab_inventory\s*:.*$", result.stdout, flags=re.MULTILINE)
    assert recap, result.stdout
    assert "failed=0" in recap.group(0), result.stdout


def test_duplicate_key_in_a_zone_map_is_refused(tmp_path):
    """YAML keeps the last of two equal keys; ansible.cfg makes it an error before any task runs."""
    extra = tmp_path / "zones.yml"
    extra.write_text(
        "---\nenclave_zones:\n  admin: [198.51.100.1/32]\n  clinical: [203.0.113.192/26]\n  clinical: [0.0.0.0/0]\n"
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "--syntax-check",
            "-e",
            f"@{extra}",
            "playbooks/preflight.yml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0, describe(result)
    assert "Found duplicate mapping key 'clinical'" in result.stdout + result.stderr, describe(result)


def test_cases_cover_the_required_failures():
    names = {case.stem for case in CASES}
    assert len(names) >= 12
    for required in (
        "profile_unknown",
        "admin_zone_empty",
        "admin_zone_invalid_cidr",
        "mirror_host_dns_name",
        "apt_url_not_http",
        "fingerprint_malformed",
        "fingerprint_set_mismatch",
        "keyring_file_missing",
        "user_not_admin",
        "controller_outside_admin_zone",
        "memory_below_minimum",
        "disk_below_minimum",
        "mirror_unreachable",
        "apt_suite_mismatch",
    ):
        assert required in names


@pytest.mark.lab
def test_lab_inventory_passes_and_changes_nothing(target):
    gnupg = Path.home() / ".gnupg"
    gnupg_before = gnupg.exists()
    before = target.state_digest()

    run = target.run_preflight()
    check = target.run_preflight("--check")

    assert run.returncode == 0, describe(run)
    assert check.returncode == 0, describe(check)
    for result in (run, check):
        recap = re.search(rf"^{target.name}\s*:.*$", result.stdout, flags=re.MULTILINE)
        assert recap, describe(result)
        assert "changed=0" in recap.group(0), describe(result)
        assert "failed=0" in recap.group(0), describe(result)
    assert target.state_digest() == before
    assert gnupg.exists() == gnupg_before, "preflight created ~/.gnupg on the controller"
