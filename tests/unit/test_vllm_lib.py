"""module_utils/vllm: settings checks, vLLM's arguments and the container's command line."""

from __future__ import annotations

import shlex

import pytest
from ansible_collections.enclave.llm.plugins.module_utils import vllm as lib

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"198.51.100.10:5000/enclave/vllm-cpu@{DIGEST}"
KEY = "k" * 32


def settings(**changes):
    base = {
        "image": IMAGE,
        "enclave_profile": "production",
        "api_key": KEY,
        "log_level": "warning",
        "model_profile": "tiny-r1",
        "profiles_extra": {},
        "gpu_facts": {"gpus": [], "pci": {"gpu_count": 0}},
    }
    return base | changes


def run_settings(**changes):
    base = {
        "container_name": "enclave-vllm",
        "model_dir": "/srv/models/tiny-r1/main",
        "socket_dir": "/run/enclave-llm",
        "secret_name": "enclave-vllm-api-key",
        "pids_limit": 4096,
        "gpu_devices": ["nvidia.com/gpu=all"],
        "health_interval_s": 30,
    }
    return base | changes


def h200s(count):
    return {"gpus": [{"memory_total_mib": 143771, "mig": {"current": False}}] * count, "pci": {"gpu_count": count}}


def test_good_settings_pass():
    assert lib.problems(settings()) == []


@pytest.mark.parametrize(
    "image",
    [
        "198.51.100.10:5000/enclave/vllm-cpu:0.32.0",
        "198.51.100.10:5000/enclave/vllm-cpu",
        "198.51.100.10:5000/enclave/vllm-cpu@sha256:abc",
        "",
        None,
    ],
)
def test_production_refuses_an_image_not_pinned_by_digest(image):
    (message,) = lib.problems(settings(image=image))
    assert message.startswith("vllm_image")
    assert "sha256" in message


def test_a_tag_is_accepted_outside_production():
    assert lib.problems(settings(image="198.51.100.10:5000/enclave/vllm-cpu:0.32.0", enclave_profile="lab")) == []


def test_a_malformed_reference_is_refused_everywhere():
    assert lib.problems(settings(image="Not An Image", enclave_profile="lab"))


@pytest.mark.parametrize("key", ["", None, "short", "x" * 31])
def test_a_short_or_missing_key_is_refused(key):
    (message,) = lib.problems(settings(api_key=key))
    assert message.startswith("vllm_api_key")
    assert "32 bytes" in message
    if key:
        assert key not in message


def test_key_length_counts_bytes_not_characters():
    assert lib.api_key_problems("é" * 16) == []
    assert lib.api_key_problems("é" * 15)


def test_a_key_with_whitespace_is_refused():
    assert lib.api_key_problems("k" * 31 + " ")


@pytest.mark.parametrize("level", ["debug", "DEBUG", "trace"])
def test_log_levels_that_print_requests_are_refused(level):
    (message,) = lib.problems(settings(log_level=level))
    assert "vllm_log_level" in message
    assert "patient data" in message


def test_an_unknown_log_level_is_refused():
    (message,) = lib.problems(settings(log_level="loud"))
    assert "not a log level" in message


def test_a_profile_whose_gpus_exceed_the_host_is_refused_with_numbers():
    (message,) = lib.problems(settings(model_profile="deepseek-r1-fp8-8xh200", gpu_facts=h200s(4)))
    assert "needs 8 GPUs" in message
    assert "4 GPUs" in message


def test_an_unknown_profile_is_refused():
    (message,) = lib.problems(settings(model_profile="gpt-oss"))
    assert "not a known model profile" in message


def test_a_multi_node_profile_is_refused():
    problems = lib.problems(settings(model_profile="deepseek-r1-fp8-16xh100", gpu_facts=h200s(8)))
    assert any("spans 2 nodes" in p for p in problems)


def test_every_fault_is_reported_at_once():
    problems = lib.problems(settings(image="x:1", api_key="short", log_level="debug"))
    assert [p.split()[0] for p in problems] == ["vllm_image", "vllm_api_key", "vllm_log_level"]


@pytest.mark.parametrize(
    "arg", ["--enable-log-requests", "--enable-log-outputs", "--api-key=x", "--host", "--port", "--trust-remote-code"]
)
def test_a_profile_may_not_add_flags_that_log_prompts_or_open_the_network(arg):
    extra = {"site": {"gpu_count": 0, "gpu_memory_mib_min": 0, "tensor_parallel": 1, "vllm_args": [arg]}}
    (message,) = lib.problems(settings(model_profile="site", profiles_extra=extra))
    assert "vllm_args" in message
    assert arg.split("=")[0] in message


@pytest.mark.parametrize(("key", "value"), [("gpu_memory_utilization", 1.5), ("max_model_len", 0), ("vllm_env", [])])
def test_bad_profile_values_are_named(key, value):
    extra = {"site": {"gpu_count": 0, "gpu_memory_mib_min": 0, "tensor_parallel": 1, key: value}}
    (message,) = lib.problems(settings(model_profile="site", profiles_extra=extra))
    assert key in message


def test_serve_args_for_the_lab_profile():
    args = lib.serve_args(lib.resolve("tiny-r1"), "tiny-r1", "warning")
    line = " ".join(args)
    assert args[0] == "/models"
    assert "--served-model-name tiny-r1" in line
    assert "--uds /run/vllm/vllm.sock" in line
    assert "--reasoning-parser deepseek_r1" in line
    assert "--max-model-len 2048" in line
    assert "--dtype float32" in line
    assert "--enforce-eager" in args
    assert "--no-enable-log-requests" in args
    assert "--uvicorn-log-level warning" in line
    assert "--tensor-parallel-size" not in args
    assert "--trust-remote-code" not in args


def test_serve_args_split_the_gpus_as_the_profile_says():
    line = " ".join(lib.serve_args(lib.resolve("deepseek-r1-fp8-8xh200"), "deepseek-r1", "info"))
    assert "--tensor-parallel-size 8" in line
    assert "--pipeline-parallel-size 1" in line
    assert "--gpu-memory-utilization 0.9" in line
    assert "--max-model-len 65536" in line
    assert "--enforce-eager" not in line


def test_environment_is_offline_and_a_profile_cannot_loosen_it():
    extra = {"site": {"gpu_count": 0, "tensor_parallel": 1, "vllm_env": {"HF_HUB_OFFLINE": "0", "FOO": 1}}}
    env = lib.environment(lib.resolve("site", extra))
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["FOO"] == "1"
    for name in ("TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        assert env[name] == "1"
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert env["TMPDIR"] == env["HOME"] == "/tmp"
    assert env["VLLM_CACHE_ROOT"].startswith("/tmp/")


def test_lab_environment_carries_the_cpu_settings():
    env = lib.environment(lib.resolve("tiny-r1"))
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_container_is_isolated():
    args = lib.podman_run_args(lib.resolve("tiny-r1"), run_settings())
    for expected in (
        "--network=none",
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        "--pids-limit=4096",
        "--volume=/srv/models/tiny-r1/main:/models:ro",
        "--volume=/run/enclave-llm:/run/vllm:rw",
        "--secret=enclave-vllm-api-key,type=env,target=VLLM_API_KEY",
        "--env=HF_HUB_OFFLINE=1",
    ):
        assert expected in args
    assert any(a.startswith("--tmpfs=/tmp:rw,nosuid,nodev,size=1g") for a in args)
    assert "--health-start-period=600s" in args


def test_cpu_profile_gets_no_gpu_device():
    args = lib.podman_run_args(lib.resolve("tiny-r1"), run_settings())
    assert not [a for a in args if a.startswith("--device")]


def test_gpu_profile_gets_the_listed_cdi_devices():
    profile = lib.resolve("deepseek-r1-distill-qwen-32b")
    args = lib.podman_run_args(profile, run_settings(gpu_devices=["nvidia.com/gpu=0", "nvidia.com/gpu=1"]))
    assert [a for a in args if a.startswith("--device")] == ["--device=nvidia.com/gpu=0", "--device=nvidia.com/gpu=1"]


@pytest.mark.parametrize(
    ("word", "quoted"),
    [
        ("--rm", "--rm"),
        ("a b", '"a b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("100%", '"100%%"'),
        ("$HOME", '"$$HOME"'),
        ("back\\slash", '"back\\\\slash"'),
    ],
)
def test_systemd_quoting(word, quoted):
    assert lib.systemd_quote(word) == quoted


def test_exec_line_reads_back_as_the_argv():
    argv = ["/usr/bin/podman", "run", f"--health-cmd={lib.health_command()}", "--env=A=b c"]
    line = lib.exec_line(argv).replace(" \\\n    ", " ")
    # systemd unquotes like a shell for these words once %% and $$ are undone.
    assert shlex.split(line.replace("%%", "%").replace("$$", "$")) == argv
