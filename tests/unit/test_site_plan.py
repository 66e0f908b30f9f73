"""Unit tests for plugins/module_utils/site.py: the site plan, and that no role derives its facts again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.enclave.llm.plugins.module_utils import site
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import firewall

REPO = Path(__file__).resolve().parents[2]
LAB = yaml.safe_load((REPO / "inventories" / "lab" / "group_vars" / "all" / "enclave.yml").read_text())
FIREWALL_DEFAULTS = yaml.safe_load((REPO / "roles" / "firewall" / "defaults" / "main.yml").read_text())
REV = "0123456789abcdef0123456789abcdef01234567"


def firewall_settings(**changes):
    settings = {
        "zones": LAB["enclave_zones"],
        "mirror": LAB["enclave_mirror"],
        "ingress": FIREWALL_DEFAULTS["firewall_ingress"],
        "ntp_servers": ["192.0.2.123"],
        "dns_resolvers": [],
        "egress_extra": [],
        "owner": "hospital-it",
        "canaries": LAB["enclave_canaries"],
    }
    settings.update(changes)
    return settings


def test_the_firewall_section_is_the_firewall_library_s_policy_and_allowlist():
    settings = firewall_settings()
    section = site.firewall_section(settings)
    expected = firewall.build_policy(
        settings["zones"],
        ingress=settings["ingress"],
        mirror=settings["mirror"],
        ntp_servers=settings["ntp_servers"],
        dns_resolvers=[],
        egress_extra=[],
        owner="hospital-it",
    )
    assert section["policy"] == expected
    assert section["allowlisted"] == firewall.allowlisted(expected)
    assert "192.0.2.123" in section["allowlisted"]
    assert LAB["enclave_mirror"]["host"] in section["allowlisted"]
    assert section["canaries"] == LAB["enclave_canaries"]


def test_the_firewall_section_does_not_share_the_caller_s_canaries():
    canaries = [{"name": "c", "address": "192.0.2.1", "proto": "tcp", "port": 443}]
    section = site.firewall_section(firewall_settings(canaries=canaries))
    section["canaries"][0]["port"] = 1
    assert canaries[0]["port"] == 443


def test_no_canaries_is_an_empty_list_and_a_canary_string_is_refused():
    assert site.firewall_section(firewall_settings(canaries=None))["canaries"] == []
    for wrong in ("192.0.2.1", ["192.0.2.1"]):
        with pytest.raises(site.PlanError, match="enclave_canaries must be a list of probe targets"):
            site.firewall_section(firewall_settings(canaries=wrong))


def test_a_firewall_setting_the_library_cannot_take_is_named():
    with pytest.raises(site.PlanError, match="the firewall settings"):
        site.firewall_section(firewall_settings(no_such_setting=1))


def test_the_model_section_is_where_the_pinned_revision_lives():
    plan = site.model_section(
        {"profile": "tiny-r1", "profiles_extra": None, "revision": REV.upper(), "root": "/srv/models/"}
    )
    assert plan["path"] == f"/srv/models/{plan['name']}/{REV}"
    assert plan["current"] == f"/srv/models/{plan['name']}/current"
    assert plan["revision"] == REV


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"profile": "no-such-profile", "revision": REV, "root": "/srv/models"}, "no-such-profile"),
        ({"profile": "tiny-r1", "revision": "main", "root": "/srv/models"}, "enclave_model_revision"),
    ],
)
def test_the_model_section_refuses_what_it_cannot_place(settings, named):
    with pytest.raises(site.PlanError, match=named):
        site.model_section(settings)


def test_the_serving_section_is_the_socket_in_its_folder():
    assert site.serving_section({"socket_dir": "/run/enclave-llm/"}) == {"socket": "/run/enclave-llm/vllm.sock"}
    with pytest.raises(site.PlanError, match="vllm_socket_dir"):
        site.serving_section({"socket_dir": "run/enclave-llm"})


@pytest.mark.parametrize(
    ("settings", "listen", "url"),
    [
        (
            {"address": "203.0.113.200", "port": 443, "server_name": "llm.example"},
            "203.0.113.200:443",
            "https://llm.example",
        ),
        (
            {"address": "2001:db8::20", "port": "8443", "server_name": ""},
            "[2001:db8::20]:8443",
            "https://2001:db8::20:8443",
        ),
    ],
)
def test_the_ingress_section_is_what_clients_connect_to(settings, listen, url):
    section = site.ingress_section(settings)
    assert section["listen"] == listen
    assert section["url"] == url


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"address": "llm.example", "port": 443}, "ingress_listen_address"),
        ({"address": "192.0.2.20", "port": 0}, "ingress_port"),
        ({"address": "192.0.2.20", "port": True}, "ingress_port"),
        ({"address": "192.0.2.20", "port": 70000}, "ingress_port"),
    ],
)
def test_the_ingress_section_refuses_what_no_client_could_reach(settings, named):
    with pytest.raises(site.PlanError, match=named):
        site.ingress_section(settings)


def test_site_plan_derives_the_named_sections_and_keeps_the_others():
    first = site.site_plan(None, serving={"socket_dir": "/run/a"})
    both = site.site_plan(first, ingress={"address": "192.0.2.20", "port": 443, "server_name": "llm"})
    assert set(both) == {"serving", "ingress"}
    assert both["serving"] == first["serving"]
    assert first == {"serving": first["serving"]}, "the plan passed in is not changed"


@pytest.mark.parametrize(
    ("plan", "sections", "named"),
    [
        ({}, {"firewal": {}}, "no such section of the site plan: firewal"),
        ([], {"serving": {"socket_dir": "/run/a"}}, "enclave_site must be a mapping"),
        ({}, {"serving": ["/run/a"]}, "the serving section's settings must be a mapping"),
    ],
)
def test_site_plan_refuses_what_is_not_a_plan(plan, sections, named):
    with pytest.raises(site.PlanError, match=named):
        site.site_plan(plan, **sections)


# What the plan derives, spelt out again in a role. Each one drifted before it
# was in the plan: the monitor's allowlist missed the mirror's hosts other than
# enclave_mirror.host and took firewall_ingress as {} where the firewall took
# its default; the ingress and vLLM each defaulted the socket folder.
REDERIVED = {
    r"\benclave_canaries\b": "the canaries: read enclave_site.firewall.canaries",
    r"\bfirewall_policy\s*\(": "the firewall policy: read enclave_site.firewall.policy",
    r"\bfirewall_allowlisted\b": "the allowlist: read enclave_site.firewall.allowlisted",
    r"enclave_zones\.(admin|clinical|cluster)[^\n]*\+": "the allowlist: read enclave_site.firewall.allowlisted",
    r"enclave_mirror\.host\s*\]": "the allowlist: read enclave_site.firewall.allowlisted",
    r"\bmodel_store_plan\b": "the model's paths: read enclave_site.model",
    r"\bmodel_folder_name\b": "the model's folder: read enclave_site.model.name",
    r"split\('/'\)\s*\|\s*last\s*\|\s*lower": "the model's folder: read enclave_site.model.name",
    r"\)\)?\.model\b": "the model's folder: read enclave_site.model",
    r"vllm\.sock": "vLLM's socket: read enclave_site.serving.socket",
}

# Files outside the roles that may name one of them, and why.
ALLOWED = {
    # The mirror side: it names a folder on the mirror for a repository it
    # publishes, before any host's plan exists.
    ("playbooks/publish_model.yml", r"\bmodel_folder_name\b"),
}


# Keys whose values are Jinja expressions without braces.
CONDITIONS = ("when", "that", "failed_when", "changed_when", "until")


def plan_tasks_removed(node):
    """``node`` without the tasks that set enclave_site (the plan's own steps name its inputs), conditions braced."""
    if isinstance(node, list):
        return [plan_tasks_removed(item) for item in node if not sets_the_plan(item)]
    if isinstance(node, dict):
        return {
            key: f"{{{{ {value} }}}}" if key in CONDITIONS else plan_tasks_removed(value) for key, value in node.items()
        }
    return node


def sets_the_plan(task):
    if not isinstance(task, dict):
        return False
    facts = task.get("ansible.builtin.set_fact") or task.get("set_fact")
    return isinstance(facts, dict) and "enclave_site" in facts


def project_files():
    roots = [REPO / "roles", REPO / "playbooks"]
    files = [REPO / "site.yml"] + [path for root in roots for path in sorted(root.rglob("*")) if path.is_file()]
    return [path for path in files if path.suffix in (".yml", ".yaml", ".j2")]


def searchable_text(path):
    """What of the file is templated: a template whole; of YAML, without the plan's own tasks, each value that
    holds a Jinja expression, one per line. Comments and descriptions may name the plan's inputs; only a
    templated value derives.
    """
    if path.suffix == ".j2":
        return path.read_text()
    text = json.dumps(plan_tasks_removed(yaml.safe_load(path.read_text())))
    values = re.findall(r'"(?:[^"\\]|\\.)*"', text)
    return "\n".join(value for value in values if "{{" in value or "{%" in value)


@pytest.mark.parametrize("path", project_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_no_role_or_playbook_derives_a_fact_of_the_plan_again(path):
    text = searchable_text(path)
    name = str(path.relative_to(REPO))
    found = [why for pattern, why in REDERIVED.items() if re.search(pattern, text) and (name, pattern) not in ALLOWED]
    assert found == []


def test_the_guard_sees_a_role_that_derives_the_allowlist_again(tmp_path):
    defaults = tmp_path / "main.yml"
    defaults.write_text('allow: "{{ enclave_zones | enclave.llm.firewall_policy(mirror=enclave_mirror) }}"\n')
    plan_task = tmp_path / "plan.yml"
    plan_task.write_text(
        yaml.safe_dump([{"name": "plan", "ansible.builtin.set_fact": {"enclave_site": "{{ enclave_canaries }}"}}])
    )
    assert re.search(r"\bfirewall_policy\s*\(", searchable_text(defaults))
    assert not re.search(r"\benclave_canaries\b", searchable_text(plan_task))


def test_every_section_a_role_reads_is_derived_by_a_role():
    """Every ``enclave_site.<section>`` a role reads has a task that derives it."""
    read = set()
    derived = set()
    for path in project_files():
        text = path.read_text()
        read |= set(re.findall(r"enclave_site\.(\w+)", text))
        derived |= set(re.findall(r"site_plan\((\w+)=", text))
    assert read, "no role reads the plan"
    assert read <= derived
    assert derived <= set(site.SECTIONS)
