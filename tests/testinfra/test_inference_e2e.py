"""End to end: a clinical application asks the model over HTTPS, and the prompt stays out of every log.

The request leaves the lab's clinic container (the clinical zone), passes the
host's firewall, the ingress (TLS, the application's key, the endpoint
allowlist) and vLLM's Unix socket, and the answer comes back through
``--reasoning-parser deepseek_r1``. The prompt carries a unique marker that
must then appear in no log on the host: the journal (system and the service
account's user units, which hold vLLM's own output), the ingress's logs, and
everything else under /var/log.

    pytest tests/testinfra/test_inference_e2e.py --hosts=podman://enclave-lab-host
"""

from __future__ import annotations

import importlib.util
import json
import uuid

import pytest
from clinic_client import KEY_DIR, clinic, clinic_endpoint
from enclave_host import REPO

pytestmark = pytest.mark.serving

_spec = importlib.util.spec_from_file_location("make_tiny_r1", REPO / "lab" / "models" / "make_tiny_r1.py")
tiny_r1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_r1)


# One conversation per host, shared by the tests that examine it.
_CONVERSATIONS: dict[str, dict] = {}


@pytest.fixture
def endpoint(enclave_vars):
    if not enclave_vars.get("enclave_serving", True):
        pytest.skip("this inventory sets enclave_serving: false")
    return clinic_endpoint(enclave_vars)


@pytest.fixture(scope="module")
def client_key():
    path = KEY_DIR / "clinic-app.key"
    if not path.exists():
        pytest.skip(f"no client key at {path} (lab/make-tls makes it)")
    return path.read_text().strip()


@pytest.fixture
def conversation(host, endpoint, client_key, enclave_vars):
    """One chat completion whose prompt carries a marker; the answer and the marker."""
    key = host.backend.get_pytest_id()
    if key not in _CONVERSATIONS:
        _CONVERSATIONS[key] = _converse(host, endpoint, client_key, enclave_vars)
    return _CONVERSATIONS[key]


def _converse(host, endpoint, client_key, enclave_vars):
    marker = f"patient-{uuid.uuid4().hex}"
    since = host.check_output("date +%s")
    body = json.dumps(
        {
            "model": enclave_vars.get("vllm_served_model_name", enclave_vars["enclave_model_profile"]),
            "messages": [{"role": "user", "content": f"{tiny_r1.GREETING} My record is {marker}."}],
            "max_tokens": 64,
        }
    )
    (answer,) = clinic(endpoint, {"path": "/v1/chat/completions", "method": "POST", "key": client_key, "body": body})
    return {"answer": answer, "marker": marker, "since": since}


def test_chat_completion_over_https_returns_the_reasoning_and_the_answer(conversation, enclave_vars):
    answer = conversation["answer"]
    assert answer["status"] == 200, answer
    message = json.loads(answer["body"])["choices"][0]["message"]
    if enclave_vars["enclave_model_profile"] != "tiny-r1":
        assert message["content"]
        return
    # The tiny model's weights make its output known in advance (lab/models).
    assert message.get("reasoning") == tiny_r1.REASONING, message
    assert message["content"] == tiny_r1.CONTENT, message
    assert "<think>" not in message["content"], "the reasoning parser did not split the reasoning off"


def test_ENC_IG_005_the_request_was_logged_without_its_prompt(host, conversation):
    # The control: the ingress did log this request (so the searches below
    # read logs that are written), naming the application, not the prompt.
    assert conversation["answer"]["status"] == 200
    lines = host.check_output("cat /var/log/nginx/enclave-access.log").splitlines()
    mine = [line for line in lines if '"/v1/chat/completions"' in line and '"client":"clinic-app"' in line]
    assert mine, "the ingress logged no chat completion of clinic-app"
    assert all(conversation["marker"] not in line for line in lines)


def test_ENC_VL_005_the_prompt_is_in_no_journal(host, conversation):
    marker = conversation["marker"]
    # The control: an entry written after the request must be found by the
    # same search, or an empty result would prove nothing.
    control = f"enclave-e2e-control-{uuid.uuid4().hex}"
    host.check_output("logger -t enclave-e2e %s", control)
    # Root reads every journal, the service account's user units included.
    journal = host.run("journalctl --no-pager -o cat --since @%s", conversation["since"])
    assert journal.rc == 0, journal.stderr
    assert control in journal.stdout, "the search does not see entries written after the request"
    assert marker not in journal.stdout


def test_ENC_IG_005_the_prompt_is_in_no_log_file(host, conversation):
    # The marker is put together by the shell: on the command line whole, it
    # would itself reach sudo's log and the journal on a host reached by sudo.
    marker = conversation["marker"]
    half = len(marker) // 2
    found = host.run('head=%s; tail=%s; grep -rlF -- "$head$tail" /var/log', marker[:half], marker[half:])
    # grep: 1 is "not found"; 0 lists the files that hold the prompt.
    assert found.rc == 1, f"the prompt was written to: {found.stdout or found.stderr}"


def test_ENC_VL_005_the_prompt_is_not_in_vllms_output(host, conversation):
    # The container logs to the journal (--log-driver=journald), tagged with
    # its name; its startup lines are the control that the search finds it.
    output = host.run("journalctl --no-pager -o cat CONTAINER_NAME=enclave-vllm")
    assert output.rc == 0, output.stderr
    assert "Starting vLLM server" in output.stdout, output.stdout[-2000:]
    assert conversation["marker"] not in output.stdout
