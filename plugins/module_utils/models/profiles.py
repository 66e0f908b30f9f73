# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The model profiles the collection ships, and whether a host's GPUs can hold one.

A profile is data: which model, how many GPUs of how much memory, and how the
GPUs are split (tensor x pipeline parallel, nodes). docs/models.md lists them;
a site adds its own with ``enclave_model_profiles_extra``. Memory minimums are
per GPU as nvidia-smi reports it (H200 143771 MiB, H100 and A100 80 GB about
81559-81920 MiB).

The vllm role reads how the model is served from the same profile (defaults in
module_utils/vllm.py): ``max_model_len``, ``gpu_memory_utilization``,
``dtype``, ``vllm_args`` (extra ``vllm serve`` flags), ``vllm_env`` (extra
environment), ``start_timeout_s`` (loading the weights: 700 GB from NVMe take
minutes) and ``scratch_size`` (the container's tmpfs).
"""

from __future__ import annotations

import copy

from ansible_collections.enclave.llm.plugins.module_utils.gpu import nvidia as nvidia_gpu

PROFILES = {
    "deepseek-r1-fp8-8xh200": {
        "description": "DeepSeek-R1 671B, FP8 weights (about 642 GiB), one HGX H200 node, tensor parallel 8",
        "model": "deepseek-ai/DeepSeek-R1",
        "gpu_count": 8,
        "gpu_memory_mib_min": 140000,
        "tensor_parallel": 8,
        "pipeline_parallel": 1,
        "nodes": 1,
        "max_model_len": 65536,
        "gpu_memory_utilization": 0.9,
        "start_timeout_s": 3600,
    },
    "deepseek-r1-fp8-16xh100": {
        "description": "DeepSeek-R1 671B, FP8 weights, two HGX H100 nodes: tensor parallel 8 x pipeline parallel 2",
        "model": "deepseek-ai/DeepSeek-R1",
        "gpu_count": 16,
        "gpu_memory_mib_min": 80000,
        "tensor_parallel": 8,
        "pipeline_parallel": 2,
        "nodes": 2,
        "max_model_len": 65536,
        "gpu_memory_utilization": 0.9,
        "start_timeout_s": 3600,
    },
    "deepseek-r1-distill-llama-70b": {
        "description": "DeepSeek-R1-Distill-Llama-70B, BF16 weights (about 132 GiB), tensor parallel 4",
        "model": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
        "gpu_count": 4,
        "gpu_memory_mib_min": 80000,
        "tensor_parallel": 4,
        "pipeline_parallel": 1,
        "nodes": 1,
        "max_model_len": 32768,
        "gpu_memory_utilization": 0.9,
        "start_timeout_s": 1800,
    },
    "deepseek-r1-distill-qwen-32b": {
        "description": "DeepSeek-R1-Distill-Qwen-32B, BF16 weights (about 61 GiB), tensor parallel 2",
        "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        "gpu_count": 2,
        "gpu_memory_mib_min": 80000,
        "tensor_parallel": 2,
        "pipeline_parallel": 1,
        "nodes": 1,
        "max_model_len": 32768,
        "gpu_memory_utilization": 0.9,
        "start_timeout_s": 1200,
    },
    "tiny-r1": {
        "description": "A tiny DeepSeek-R1-style model for the lab, served by vLLM on the CPU",
        "model": "enclave-lab/tiny-r1",
        "gpu_count": 0,
        "gpu_memory_mib_min": 0,
        "tensor_parallel": 1,
        "pipeline_parallel": 1,
        "nodes": 1,
        "max_model_len": 2048,
        "gpu_memory_utilization": 0.9,
        # vLLM on the CPU: float32 kernels, no graph capture, one process.
        "dtype": "float32",
        "vllm_args": ["--enforce-eager", "--distributed-executor-backend", "uni"],
        "vllm_env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
        "start_timeout_s": 600,
        "scratch_size": "1g",
    },
}


def resolve(name, extra=None):
    """The profile called ``name`` (shipped or from ``extra``), with its name; ValueError if unknown."""
    known = {**PROFILES, **(extra or {})}
    if name not in known:
        raise ValueError(
            f"enclave_model_profile {name!r} is not a known model profile: choose one of {', '.join(sorted(known))} "
            "(docs/models.md), or define it in enclave_model_profiles_extra"
        )
    profile = copy.deepcopy(known[name])
    profile["name"] = name
    return profile


def host_problems(name, extra, gpu_facts):
    """Why the host cannot serve profile ``name``, judged from the enclave_gpus fact (empty: it can).

    With a working driver the GPUs' memory counts too; before the driver is
    installed only the NVIDIA GPUs on the PCI bus can be counted, and the
    memory is checked once the GPU stack is in place.
    """
    try:
        profile = resolve(name, extra)
    except ValueError as exc:
        return [str(exc)]
    if not profile.get("gpu_count"):
        return []
    facts = gpu_facts or {}
    if facts.get("gpus"):
        return nvidia_gpu.profile_fits(profile, facts["gpus"])
    # Before a driver answers only the PCI bus can be counted; the profile's
    # own arithmetic holds whatever the host has.
    problems, numbers = nvidia_gpu.profile_shape(profile)
    if problems or numbers is None:
        return problems
    per_node = numbers["per_node"]
    on_bus = (facts.get("pci") or {}).get("gpu_count", 0)
    if on_bus >= per_node:
        return []
    return [
        f"profile {name} needs {per_node} GPUs on this host with >= {profile['gpu_memory_mib_min']} MiB each; "
        f"the PCI bus shows {on_bus} NVIDIA GPU(s) and no driver answers yet: choose a profile for this "
        "hardware (docs/models.md)"
    ]
