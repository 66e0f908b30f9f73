# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Pure logic behind the vllm role: settings checks, vLLM's arguments, the container's command line.

The role renders a systemd user unit that runs ``podman run`` (the unit a
quadlet ``.container`` file would generate: Debian 12's Podman 4.3.1 ships no
quadlet generator). Everything that decides what runs is built here, from the
model profile (module_utils/models/profiles.py) and the role's settings, and
unit-tested: the environment, vLLM's flags, Podman's isolation options.

Functions named ``*_problems`` return one message per fault, each naming the
variable and the fix; an empty list means fine. Nothing here touches the host.
"""

from __future__ import annotations

import re

from ansible_collections.enclave.llm.plugins.module_utils.models import profiles as model_profiles

# The image must name one immutable build: registry/repo@sha256:<64 hex>.
_DIGEST_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._:/-]*[a-z0-9])@sha256:[0-9a-f]{64}$")
_TAG_REF = re.compile(r"^[a-z0-9][a-z0-9._:/-]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")
MIN_API_KEY_BYTES = 32
# Uvicorn levels; debug and trace print request bodies, which carry PHI.
LOG_LEVELS = ("critical", "error", "warning", "info")
FORBIDDEN_LOG_LEVELS = ("debug", "trace")

# Where things appear inside the container.
MODEL_MOUNT = "/models"
SOCKET_MOUNT = "/run/vllm"
SCRATCH = "/tmp"
SOCKET_NAME = "vllm.sock"
# An env-type secret: Podman 4.3 cannot mount a secret's file into a
# read-only root filesystem. Who can read the container's configuration (the
# account, root) can read Podman's secret store as well.
SECRET_ENV = "VLLM_API_KEY"

# No request may reach anything outside the host (and there is no network to
# reach it through): the hub, telemetry and usage statistics are all off.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_HOST_IP": "127.0.0.1",
}
SCRATCH_ENV = {
    "HOME": SCRATCH,
    "TMPDIR": SCRATCH,
    "VLLM_CACHE_ROOT": f"{SCRATCH}/vllm-cache",
    "HF_HOME": f"{SCRATCH}/hf",
    "XDG_CACHE_HOME": f"{SCRATCH}/cache",
}

# Flags a profile may not add, and why.
REFUSED_ARGS = {
    "--enable-log-requests": "request logs carry prompts (patient data)",
    "--enable-log-outputs": "output logs carry answers (patient data)",
    "--api-key": "a key on the command line is visible to every process; the role passes it as a secret",
    "--host": "the container has no network; vLLM serves on its Unix socket",
    "--port": "the container has no network; vLLM serves on its Unix socket",
    "--uvicorn-log-level": "set vllm_log_level instead (debug and trace are refused)",
    "--trust-remote-code": "set trust_remote_code in the profile, where a reviewer sees it",
}

# The profile keys this module reads, with the values used when a profile
# leaves them out.
PROFILE_DEFAULTS = {
    "max_model_len": 32768,
    "gpu_memory_utilization": 0.9,
    "dtype": "auto",
    "vllm_args": [],
    "vllm_env": {},
    "start_timeout_s": 3600,
    "scratch_size": "8g",
    "trust_remote_code": False,
}


# -------------------------------------------------------------------- checks


def image_problems(image, enclave_profile):
    """The image reference: a digest everywhere it matters, a tag only outside production."""
    image = image or ""
    if _DIGEST_REF.match(image):
        return []
    if enclave_profile == "production" or not _TAG_REF.match(image):
        return [
            f"vllm_image {image!r} is not pinned by digest: give registry/repository@sha256:<64 hex digits> "
            "of the internal registry (a tag can be moved to another build; outside the production profile "
            "a tag is accepted)"
        ]
    return []


def api_key_problems(key):
    """The API key the ingress presents to vLLM: long enough not to be guessed."""
    if not isinstance(key, str) or not key:
        return [
            f"vllm_api_key is not set: give a random key of at least {MIN_API_KEY_BYTES} bytes from the vault "
            "(e.g. `openssl rand -hex 32`)"
        ]
    size = len(key.encode("utf-8"))
    if size < MIN_API_KEY_BYTES:
        return [
            f"vllm_api_key is {size} bytes long, below the minimum of {MIN_API_KEY_BYTES}: give a random key of "
            "at least 32 bytes from the vault (e.g. `openssl rand -hex 32`)"
        ]
    if any(ch.isspace() or ord(ch) < 32 for ch in key):
        return ["vllm_api_key contains whitespace or control characters: give a key of printable characters only"]
    return []


def log_level_problems(level):
    """Uvicorn's log level: never one that prints requests."""
    value = str(level or "").lower()
    if value in FORBIDDEN_LOG_LEVELS:
        return [
            f"vllm_log_level {level!r} would log requests, and prompts carry patient data: "
            f"choose one of {', '.join(LOG_LEVELS)}"
        ]
    if value not in LOG_LEVELS:
        return [f"vllm_log_level {level!r} is not a log level: choose one of {', '.join(LOG_LEVELS)}"]
    return []


def profile_problems(profile):
    """What the role cannot serve from the profile's own data."""
    problems = []
    name = profile["name"]
    if (profile.get("nodes") or 1) > 1:
        problems.append(
            f"profile {name} spans {profile['nodes']} nodes: the vllm role serves one host with a container that "
            "has no network, so a multi-node profile needs the cluster network first; choose a one-node profile"
        )
    utilization = profile["gpu_memory_utilization"]
    if not isinstance(utilization, (int, float)) or isinstance(utilization, bool) or not 0 < utilization <= 1:
        problems.append(f"profile {name}: gpu_memory_utilization {utilization!r} must be a number in (0, 1]")
    for key in ("max_model_len", "start_timeout_s"):
        value = profile[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            problems.append(f"profile {name}: {key} {value!r} must be a positive whole number")
    if not isinstance(profile["vllm_args"], list) or not all(isinstance(a, str) for a in profile["vllm_args"]):
        problems.append(f"profile {name}: vllm_args must be a list of strings")
    else:
        refused = [arg for arg in profile["vllm_args"] if arg.split("=", 1)[0] in REFUSED_ARGS]
        if refused:
            problems.append(
                f"profile {name}: vllm_args {refused} are refused: "
                + "; ".join(REFUSED_ARGS[a.split("=", 1)[0]] for a in refused)
            )
    if not isinstance(profile["vllm_env"], dict):
        problems.append(f"profile {name}: vllm_env must be a mapping of names to values")
    return problems


def problems(settings):
    """Every fault in the role's settings; empty when the role may go ahead.

    ``settings`` holds ``image``, ``enclave_profile``, ``api_key``,
    ``log_level``, ``model_profile``, ``profiles_extra`` and ``gpu_facts``
    (the enclave_gpus fact, absent before the GPU stack ran).
    """
    found = image_problems(settings.get("image"), settings.get("enclave_profile"))
    found += api_key_problems(settings.get("api_key"))
    found += log_level_problems(settings.get("log_level"))
    try:
        profile = resolve(settings.get("model_profile"), settings.get("profiles_extra"))
    except ValueError as exc:
        return [*found, str(exc)]
    found += profile_problems(profile)
    found += model_profiles.host_problems(profile["name"], settings.get("profiles_extra"), settings.get("gpu_facts"))
    return found


# -------------------------------------------------------------------- building


def resolve(name, extra=None):
    """The model profile with every key this module reads filled in."""
    profile = model_profiles.resolve(name, extra)
    for key, default in PROFILE_DEFAULTS.items():
        profile.setdefault(key, default)
    return profile


def serve_args(profile, served_model_name, log_level):
    """``vllm serve`` arguments after the image's entrypoint: the model, the socket, the profile's flags."""
    args = [
        f"{MODEL_MOUNT}",
        "--served-model-name",
        served_model_name,
        "--uds",
        f"{SOCKET_MOUNT}/{SOCKET_NAME}",
        "--reasoning-parser",
        "deepseek_r1",
        "--max-model-len",
        str(profile["max_model_len"]),
        "--dtype",
        str(profile["dtype"]),
        "--uvicorn-log-level",
        str(log_level).lower(),
        "--disable-uvicorn-access-log",
        # Off by default in vLLM 0.32; said here so a new default cannot turn it on.
        "--no-enable-log-requests",
    ]
    if profile.get("gpu_count"):
        args += [
            "--gpu-memory-utilization",
            str(profile["gpu_memory_utilization"]),
            "--tensor-parallel-size",
            str(profile["tensor_parallel"]),
            "--pipeline-parallel-size",
            str(profile["pipeline_parallel"]),
        ]
    if profile.get("trust_remote_code"):
        args.append("--trust-remote-code")
    return args + list(profile["vllm_args"])


def environment(profile):
    """The container's environment: offline and scratch settings first, the profile's on top."""
    env = {**OFFLINE_ENV, **SCRATCH_ENV}
    env.update({str(k): str(v) for k, v in profile["vllm_env"].items()})
    # A profile may add, never loosen: the offline settings win.
    env.update(OFFLINE_ENV)
    return env


def podman_run_args(profile, settings):
    """``podman run`` options (without the image and its arguments) for the inference container.

    ``settings``: ``container_name``, ``model_dir`` and ``socket_dir`` (host
    paths), ``secret_name``, ``pids_limit``, ``gpu_devices`` (CDI names;
    used only when the profile needs GPUs) and ``health_interval_s``.
    """
    scratch = f"{SCRATCH}:rw,nosuid,nodev,size={profile['scratch_size']},mode=0700"
    args = [
        f"--name={settings['container_name']}",
        "--replace",
        "--rm",
        "--network=none",
        "--read-only",
        "--read-only-tmpfs=false",
        f"--tmpfs={scratch}",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        f"--pids-limit={int(settings['pids_limit'])}",
        # The socket must be group-writable for the ingress's group; the
        # folder's setgid bit gives it that group.
        "--umask=0007",
        f"--volume={settings['model_dir']}:{MODEL_MOUNT}:ro",
        f"--volume={settings['socket_dir']}:{SOCKET_MOUNT}:rw",
        f"--secret={settings['secret_name']},type=env,target={SECRET_ENV}",
        "--log-driver=journald",
        f"--health-cmd={health_command()}",
        f"--health-interval={int(settings['health_interval_s'])}s",
        f"--health-start-period={int(profile['start_timeout_s'])}s",
        "--health-retries=3",
    ]
    if profile.get("gpu_count"):
        args += [f"--device={device}" for device in settings["gpu_devices"]]
    args += [f"--env={name}={value}" for name, value in sorted(environment(profile).items())]
    return args


def health_command():
    """A health probe that needs nothing but the image's Python: GET /health on the socket."""
    return (
        'python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); '
        f"s.connect('{SOCKET_MOUNT}/{SOCKET_NAME}'); s.sendall(b'GET /health HTTP/1.0\\r\\n\\r\\n'); "
        "sys.exit(0 if s.recv(64).split()[1:2]==[b'200'] else 1)\""
    )


def systemd_quote(word):
    """One word of an Exec line as systemd reads it back (quotes, backslashes, % and $ escaped)."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    if escaped == word and word and not any(ch.isspace() or ch in "'\";" for ch in word):
        return word
    return f'"{escaped}"'


def exec_line(argv):
    """An argv as the value of ExecStart=, one option per continued line."""
    return " \\\n    ".join(systemd_quote(word) for word in argv)
