"""Bad settings for the vllm role against a real host: each fails with one clear
message naming the variable and the fix, and leaves the host exactly as it was
(the state digest covers /etc, /usr/local, /opt and the package list, so an
installed unit, a created group or a tmpfiles entry would show).

The host is the integration suite's lab target (conftest.py), provisioned by
nothing: the refusals must come before the first change, and before the
checks that need the service account or the weights.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab

IMAGE_BY_TAG = "198.51.100.10:5000/enclave/vllm-cpu:0.32.0"


def case(name, extra, fragments):
    return pytest.param(extra, fragments, id=name)


CASES = [
    case(
        "image_not_pinned_by_digest_in_production",
        {"enclave_profile": "production", "vllm_image": IMAGE_BY_TAG},
        [f"vllm_image '{IMAGE_BY_TAG}' is not pinned by digest", "registry/repository@sha256:"],
    ),
    case(
        "api_key_shorter_than_32_bytes",
        {"vllm_api_key": "short-lab-key"},
        ["vllm_api_key is 13 bytes long, below the minimum of 32", "openssl rand -hex 32"],
    ),
    case(
        "log_level_debug",
        {"vllm_log_level": "DEBUG"},
        ["vllm_log_level 'DEBUG' would log requests", "choose one of critical, error, warning, info"],
    ),
    case(
        "profile_gpus_exceed_the_host",
        {"vllm_model_profile": "deepseek-r1-fp8-8xh200"},
        ["profile deepseek-r1-fp8-8xh200 needs 8 GPUs on this host", "the PCI bus shows 0 NVIDIA GPU(s)"],
    ),
]


@pytest.mark.parametrize(("extra", "fragments"), CASES)
def test_bad_setting_fails_with_a_clear_message_and_changes_nothing(target, extra, fragments):
    output = target.run_refused("vllm.yml", extra, fragments)
    if "vllm_api_key" in extra:
        assert extra["vllm_api_key"] not in output, "the key shows in the output"
