"""module_utils/models/profiles.py: the shipped profiles and the host fit check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.models import profiles as lib

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def gpus(count, memory, mig=False):
    return {
        "gpus": [{"memory_total_mib": memory, "mig": {"current": mig}} for _gpu in range(count)],
        "pci": {"gpu_count": count},
    }


@pytest.mark.parametrize("name", sorted(lib.PROFILES))
def test_every_shipped_profile_is_consistent(name):
    profile = lib.PROFILES[name]
    assert profile["tensor_parallel"] * profile["pipeline_parallel"] == max(profile["gpu_count"], 1)
    assert profile["gpu_count"] % profile["nodes"] == 0


@pytest.mark.parametrize("name", sorted(lib.PROFILES))
def test_every_shipped_profile_is_documented(name):
    assert re.search(rf"^\| `{re.escape(name)}` \|", DOCS.read_text(), flags=re.MULTILINE), name


def test_unknown_profile_names_the_known_ones():
    (message,) = lib.host_problems("gpt-oss", None, gpus(8, 143771))
    assert "'gpt-oss' is not a known model profile" in message
    assert "deepseek-r1-fp8-8xh200" in message
    assert "tiny-r1" in message


def test_extra_profiles_are_known():
    extra = {"site-model": {"gpu_count": 1, "gpu_memory_mib_min": 40000, "tensor_parallel": 1}}
    assert lib.host_problems("site-model", extra, gpus(1, 81559)) == []


def test_r1_on_eight_h200_fits():
    assert lib.host_problems("deepseek-r1-fp8-8xh200", None, gpus(8, 143771)) == []


def test_r1_fp8_on_eight_h100_does_not_fit_and_says_why():
    (message,) = lib.host_problems("deepseek-r1-fp8-8xh200", None, gpus(8, 81559))
    assert "needs 8 GPUs with >= 140000 MiB each" in message
    assert "8 GPUs of 81559 MiB" in message


def test_two_node_profile_needs_eight_per_node():
    assert lib.host_problems("deepseek-r1-fp8-16xh100", None, gpus(8, 81559)) == []
    (message,) = lib.host_problems("deepseek-r1-fp8-16xh100", None, gpus(4, 81559))
    assert "8 GPUs on each of 2 nodes" in message


def test_gpus_in_mig_mode_do_not_count():
    assert lib.host_problems("deepseek-r1-distill-qwen-32b", None, gpus(2, 81920, mig=True))


def test_before_the_driver_only_the_pci_count_is_checked():
    facts = {"gpus": [], "pci": {"gpu_count": 4}}
    assert lib.host_problems("deepseek-r1-distill-llama-70b", None, facts) == []
    (message,) = lib.host_problems("deepseek-r1-fp8-8xh200", None, facts)
    assert "needs 8 GPUs on this host" in message
    assert "the PCI bus shows 4 NVIDIA GPU(s)" in message


def test_before_the_driver_a_profile_that_does_not_add_up_is_refused():
    """Tensor parallel 3 on a fresh server with 8 GPUs on the bus: 3 x 1 is not the profile's 8."""
    extra = {
        "odd": {
            "gpu_count": 8,
            "gpu_memory_mib_min": 80000,
            "tensor_parallel": 3,
            "pipeline_parallel": 1,
            "nodes": 1,
        }
    }
    (message,) = lib.host_problems("odd", extra, {"gpus": [], "pci": {"gpu_count": 8}})
    assert "tensor_parallel 3 x pipeline_parallel 1 = 3, but gpu_count is 8" in message


def test_cpu_profile_needs_no_gpu():
    assert lib.host_problems("tiny-r1", None, {"gpus": [], "pci": {"gpu_count": 0}}) == []


@pytest.mark.parametrize("name", sorted(lib.PROFILES))
def test_every_shipped_profile_says_how_vllm_serves_it(name):
    from ansible_collections.enclave.llm.plugins.module_utils import vllm

    profile = vllm.resolve(name)
    problems = vllm.profile_problems(profile)
    if profile["nodes"] > 1:
        assert problems == [next(p for p in problems if "spans" in p)]
    else:
        assert problems == []
    assert profile["max_model_len"] > 0
    assert profile["start_timeout_s"] >= 600


def test_the_lab_profile_runs_on_the_cpu():
    profile = lib.PROFILES["tiny-r1"]
    assert profile["dtype"] == "float32"
    assert "--enforce-eager" in profile["vllm_args"]
    assert "VLLM_CPU_KVCACHE_SPACE" in profile["vllm_env"]
