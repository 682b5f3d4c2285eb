"""A GPU box on Modal: JupyterLab behind a random token, SSH with your public key, or a vLLM OpenAI-compatible server
behind a random API key (e.g. the judge model for `python -m evals judge`).

    modal run launch_modal.py                                                  # JupyterLab
    modal run launch_modal.py --mode ssh --public-key ~/.ssh/id_ed25519.pub    # key-only SSH as root
    modal run launch_modal.py --mode vllm --model Qwen/Qwen3-8B --idle-timeout 600
    modal run launch_modal.py --gpu A100-80GB --idle-timeout 3600 --max-hours 4
    python launch_modal.py --help                                              # every option (key=value works too)

The box runs the training image's pinned `gpu` set plus `dev` and `box` (pyproject.toml), has the repo at
/root/project (on PYTHONPATH; secrets, datasets and runs are not uploaded) and the training volumes: HF cache at
/cache (vLLM's weights stay there between launches), uploaded datasets at /data, Modal runs at /runs.
It stops after `--idle-timeout` seconds without a kernel or terminal (idle kernels are culled even while a browser
tab is connected), SSH connection or vLLM request, and after `--max-hours` whatever happens.
There is never a password and never an open endpoint: the Jupyter token and the vLLM API key are generated here, on
your machine, printed once here, and handed to the container as a Modal Secret, so they never appear in the
container's output (Modal's logs); sshd accepts public keys only and the box prints its host-key fingerprint.
Anyone with the URL and token, or the private key, has a root shell on the box; anyone with the vLLM URL and key can
use the GPU.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import modal
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from moderation.config import parse_command_line, validate_config
from moderation.errors import UserError, cli_main
from training.modal_app import REPO_ROOT, ModalSettings, available_secrets, gpu_environment, volumes

PROJECT = "/root/project"
JUPYTER_PORT = 8888
SSH_PORT = 22
VLLM_PORT = 8000
POLL_S = 30
VLLM_START_S = 30 * 60  # first launch downloads the weights to the volume
SSH_HOST_KEY = Path("/etc/ssh/ssh_host_ed25519_key.pub")
# The environment variable each mode's credential reaches the container in (a Modal Secret made at launch).
CREDENTIAL_ENV = {"jupyter": "JUPYTER_TOKEN", "vllm": "VLLM_API_KEY"}
PUBLIC_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
NOT_UPLOADED = [
    *(".venv", ".git", "wandb", "mlruns", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"),
    *("data", "runs"),  # datasets and runs reach the box through the /data and /runs volumes
    *("**/.env", "**/.env.*", "**/*.pem", "**/*.key", "**/id_*"),  # credentials never leave this machine
]


class BoxConfig(BaseModel):
    """Everything a box needs; built from the `modal run launch_modal.py` options."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["jupyter", "ssh", "vllm"] = Field(
        "jupyter", description="JupyterLab with a token, SSH with a key, or a vLLM OpenAI-compatible server with a key"
    )
    public_key: str = Field("", description="ssh mode: the OpenSSH public key line allowed to log in")
    model: str = Field("", description="vllm mode: the Hugging Face model id to serve")
    max_model_len: int = Field(8192, ge=512, description="vllm mode: context length (judge prompts are ~2k tokens)")
    gpu: str = Field("L40S", description="Modal GPU type")
    idle_timeout_s: int = Field(1800, ge=60, description="stop after this long without a kernel or connection")
    timeout_s: int = Field(8 * 3600, ge=300, le=24 * 3600, description="hard limit on the box's lifetime")

    @model_validator(mode="after")
    def _ssh_needs_key(self) -> BoxConfig:
        if self.mode == "ssh" and not self.public_key:
            raise ValueError("--mode ssh needs --public-key ~/.ssh/id_ed25519.pub")
        if self.mode == "vllm" and not self.model:
            raise ValueError("--mode vllm needs --model <hugging face id>")
        return self


def read_public_key(path: Path) -> str:
    """The one OpenSSH public key line in `path`; a private key or anything else is refused."""
    try:
        text = path.expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read public key {path}: {error.strerror or error}") from None
    if "PRIVATE KEY" in text:
        raise UserError(f"{path} is a private key: pass the .pub file next to it")
    fields = text.split()
    if len(text.splitlines()) != 1 or len(fields) < 2 or fields[0] not in PUBLIC_KEY_TYPES:
        raise UserError(f"{path} is not an OpenSSH public key line (type, base64 key, comment)")
    return text


def new_token() -> str:
    """A fresh random Jupyter token or API key (256 bits), different for every box."""
    return secrets.token_urlsafe(32)


def credential_message(config: BoxConfig, credential: str) -> str:
    """What the launching machine prints, once: the credential and how to use it with the URL the box prints."""
    if config.mode == "vllm":
        return (
            f"vLLM API key (printed once, only here; keep it private): {credential}\n"
            "Judge an evaluation with it once the box prints its API URL below:\n"
            f"  export JUDGE_API_KEY={credential}\n"
            f"  python -m evals judge --run runs/evals/<eval> --endpoint <API URL> --model {config.model} "
            "--api-key-env JUDGE_API_KEY"
        )
    return f"Jupyter token (printed once, only here; keep it private): {credential}"


def required_credential(mode: str) -> str:
    """The container side: the launch's credential from its Secret; without one the box refuses to start open."""
    credential = os.environ.get(CREDENTIAL_ENV[mode], "")
    if len(credential) < 32:
        raise RuntimeError(f"{CREDENTIAL_ENV[mode]} is missing: start the box with `modal run launch_modal.py`")
    return credential


def jupyter_command(idle_timeout_s: int, port: int = JUPYTER_PORT) -> list[str]:
    """JupyterLab on all interfaces (the tunnel connects from outside the container), culling idle kernels and
    shutting down when nothing has happened for `idle_timeout_s`. Kernels are culled when idle even while a browser
    tab is connected (`cull_connected`), so a forgotten tab does not hold the GPU; busy kernels are left alone.
    The token comes from $JUPYTER_TOKEN, so it never appears in the process list and Jupyter's own log masks it."""
    return [
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        "--ip=0.0.0.0",
        f"--port={port}",
        f"--ServerApp.root_dir={PROJECT}",
        "--ServerApp.allow_remote_access=True",
        f"--ServerApp.shutdown_no_activity_timeout={idle_timeout_s}",
        f"--MappingKernelManager.cull_idle_timeout={idle_timeout_s}",
        f"--MappingKernelManager.cull_interval={POLL_S}",
        "--MappingKernelManager.cull_connected=True",
        f"--TerminalManager.cull_inactive_timeout={idle_timeout_s}",
    ]


def sshd_config(port: int = SSH_PORT) -> str:
    """An sshd_config that accepts public keys only: no passwords, no keyboard-interactive, root by key alone."""
    return (
        "\n".join(
            [
                f"Port {port}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "AuthenticationMethods publickey",
                "AuthorizedKeysFile .ssh/authorized_keys",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitEmptyPasswords no",
                "UsePAM no",
                "X11Forwarding no",
                "ClientAliveInterval 60",
                "Subsystem sftp internal-sftp",
            ]
        )
        + "\n"
    )


def fingerprint(public_key_line: str) -> str:
    """The SHA256 fingerprint `ssh-keygen -l` shows (and ssh asks about on first connection) for a public key line."""
    blob = base64.b64decode(public_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def known_hosts_line(host: str, port: int, public_key_line: str) -> str:
    """A ~/.ssh/known_hosts entry for the tunnel, so ssh can check the box's host key strictly."""
    key_type, key = public_key_line.split()[:2]
    return f"[{host}]:{port} {key_type} {key}"


def local_get(port: int, path: str, authorization: str, timeout_s: float = 10) -> str | None:
    """GET `path` from a server in this container, with an Authorization header; None unless it answers 200."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read().decode("utf-8", "replace")
    except OSError:
        return None


def jupyter_sessions(port: int, token: str, timeout_s: float = 10) -> int:
    """Kernels plus terminals open on the local Jupyter server (0 when it does not answer). Jupyter culls idle ones,
    so this stays above 0 only while someone works or a kernel is busy, whatever the browser tabs do."""
    count = 0
    for path in ("/api/kernels", "/api/terminals"):
        try:
            count += len(json.loads(local_get(port, path, f"token {token}", timeout_s) or "[]"))
        except ValueError:
            continue
    return count


# vLLM's own key check covers /v1 routes only, which would leave /invocations, /pooling, /tokenize and the like open
# to anyone who finds the tunnel's URL. This middleware (loaded with --middleware) refuses every path without the key,
# and everything when no key is set. It is a standalone module written next to the server, so vLLM's process does not
# import this launcher (and Modal) to load it.
KEY_GUARD = "vllm_key_guard"
KEY_GUARD_SOURCE = '''"""Written by launch_modal.py: every vLLM path needs `Authorization: Bearer $VLLM_API_KEY`."""

import hmac
import os

from fastapi.responses import JSONResponse


async def require_api_key(request, call_next):
    key = os.environ.get("VLLM_API_KEY", "")
    given = request.headers.get("authorization", "").encode()
    if len(key) < 32 or not hmac.compare_digest(given, f"Bearer {key}".encode()):
        return JSONResponse({"error": "Unauthorized"}, status_code=401)
    return await call_next(request)
'''


def write_key_guard(folder: Path) -> Path:
    """Write the key-guard module into `folder` (put it on vLLM's PYTHONPATH); return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{KEY_GUARD}.py").write_text(KEY_GUARD_SOURCE, encoding="utf-8")
    return folder


def vllm_requests(metrics_text: str) -> tuple[float, float]:
    """(requests finished so far, requests running or waiting) from vLLM's Prometheus /metrics text."""
    finished = in_flight = 0.0
    for line in metrics_text.split("\n"):
        fields = line.split()
        if len(fields) < 2 or line.startswith("#"):
            continue
        name = fields[0].split("{")[0]
        try:
            number = float(fields[-1])
        except ValueError:
            continue
        if name == "vllm:request_success_total":
            finished += number
        elif name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
            in_flight += number
    return finished, in_flight


class VllmActivity:
    """busy() for `wait_until_idle`: true while requests run, or when some finished since the last check."""

    def __init__(self, key: str, port: int = VLLM_PORT):
        self.key = key
        self.port = port
        self.finished = 0.0

    def __call__(self) -> bool:
        text = local_get(self.port, "/metrics", f"Bearer {self.key}")
        if text is None:
            return False
        finished, in_flight = vllm_requests(text)
        busy = in_flight > 0 or finished != self.finished
        self.finished = finished
        return busy


def vllm_command(config: BoxConfig, port: int = VLLM_PORT) -> list[str]:
    """vLLM's OpenAI-compatible server. The API key is not on this command line: vLLM reads it from $VLLM_API_KEY
    (the launch's Secret) and then refuses /v1 requests without it, and the key guard refuses every other path
    without it; on the command line it would show in the process list and in the arguments vLLM logs at startup,
    which Modal keeps."""
    return [
        "vllm",
        "serve",
        config.model,
        "--host=0.0.0.0",
        f"--port={port}",
        f"--max-model-len={config.max_model_len}",
        f"--middleware={KEY_GUARD}.require_api_key",
    ]


def established_connections(proc_net_tcp: str, port: int) -> int:
    """How many TCP connections to local `port` are established, from the text of /proc/net/tcp or tcp6."""
    count = 0
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1].rsplit(":", 1)[-1] == f"{port:04X}" and fields[3] == "01":
            count += 1
    return count


def wait_until_idle(
    busy: Callable[[], bool],
    idle_timeout_s: float,
    clock=time.monotonic,
    sleep=time.sleep,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Return once `busy()` has been false for `idle_timeout_s` in a row (checked every POLL_S seconds), or as soon
    as `stopped()` (the server exited by itself)."""
    last_busy = clock()
    while clock() - last_busy < idle_timeout_s and not stopped():
        sleep(POLL_S)
        if busy():
            last_busy = clock()


def box_options(config: BoxConfig) -> dict:
    """GPU, lifetime and the training volumes (same HF cache, datasets and runs)."""
    return {"gpu": config.gpu, "timeout": config.timeout_s, "volumes": volumes(ModalSettings())}


DEFAULTS = BoxConfig()
app = modal.App("grpo-moderation-box")
image = (
    gpu_environment("dev", "box")
    .apt_install("openssh-server")
    .env({"PYTHONPATH": PROJECT})
    .add_local_dir(REPO_ROOT, PROJECT, ignore=NOT_UPLOADED)
)


@app.function(image=image, **box_options(DEFAULTS))
def box(config_json: str) -> None:
    """The container side: serve Jupyter, sshd or vLLM through a Modal tunnel until idle."""
    config = BoxConfig.model_validate_json(config_json)
    {"ssh": serve_ssh, "jupyter": serve_jupyter, "vllm": serve_vllm}[config.mode](config)


def serve_jupyter(config: BoxConfig) -> None:
    token = required_credential("jupyter")
    server = subprocess.Popen(jupyter_command(config.idle_timeout_s))  # reads $JUPYTER_TOKEN
    with modal.forward(JUPYTER_PORT) as tunnel:
        print(f"JupyterLab: {tunnel.url}/lab  (log in with the token printed where you ran `modal run`)", flush=True)
        wait_until_idle(
            lambda: jupyter_sessions(JUPYTER_PORT, token) > 0,
            config.idle_timeout_s,
            stopped=lambda: server.poll() is not None,
        )
    server.terminate()


def serve_vllm(config: BoxConfig) -> None:
    key = required_credential("vllm")
    guard = write_key_guard(Path("/tmp/vllm-key-guard"))
    python_path = os.pathsep.join(filter(None, [str(guard), os.environ.get("PYTHONPATH")]))
    server = subprocess.Popen(vllm_command(config), env={**os.environ, "PYTHONPATH": python_path})  # $VLLM_API_KEY
    deadline = time.monotonic() + VLLM_START_S
    while local_get(VLLM_PORT, "/health", f"Bearer {key}", timeout_s=5) is None:
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"vLLM did not start serving {config.model} (exit code {server.poll()})")
        time.sleep(5)
    modal.Volume.from_name(ModalSettings().hf_cache_volume).commit()  # the weights stay cached for the next launch
    with modal.forward(VLLM_PORT) as tunnel:
        print(
            f"vLLM OpenAI-compatible API for {config.model}: {tunnel.url}/v1  (key printed by `modal run`)", flush=True
        )
        wait_until_idle(VllmActivity(key), config.idle_timeout_s, stopped=lambda: server.poll() is not None)
    server.terminate()


def serve_ssh(config: BoxConfig) -> None:
    ssh_dir = Path("/root/.ssh")
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(config.public_key + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    Path("/etc/ssh/sshd_config").write_text(sshd_config())
    Path("/run/sshd").mkdir(exist_ok=True)
    subprocess.run(["ssh-keygen", "-A"], check=True)  # fresh host keys for this box
    subprocess.Popen(["/usr/sbin/sshd", "-D", "-e"])
    host_key = SSH_HOST_KEY.read_text().strip()
    with modal.forward(SSH_PORT, unencrypted=True) as tunnel:
        host, port = tunnel.tcp_socket
        print(f"ssh -p {port} root@{host}    (key only; repo in {PROJECT})", flush=True)
        print(f"host key ED25519 {fingerprint(host_key)}: compare before answering ssh's question, or add", flush=True)
        print(f"  {known_hosts_line(host, port, host_key)}\nto ~/.ssh/known_hosts", flush=True)
        wait_until_idle(lambda: established_connections(_proc_net_tcp(), SSH_PORT) > 0, config.idle_timeout_s)


def _proc_net_tcp() -> str:
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    return "".join(table.read_text() for table in tables if table.exists())


# The BoxConfig fields the command line sets as they are; the others are given in friendlier units or as a file.
AS_GIVEN = ("mode", "model", "max_model_len", "gpu")
LaunchOptions = create_model(
    "LaunchOptions",
    __config__=ConfigDict(extra="forbid"),
    __doc__="The `modal run launch_modal.py` options, turned into a BoxConfig by `box_config`.",
    **{name: (BoxConfig.model_fields[name].annotation, BoxConfig.model_fields[name]) for name in AS_GIVEN},
    public_key=(Path | None, Field(None, description="ssh mode: your OpenSSH public key file (the .pub)")),
    idle_timeout=(
        int,
        Field(DEFAULTS.idle_timeout_s, description="seconds without a kernel or connection before the box stops"),
    ),
    max_hours=(float, Field(DEFAULTS.timeout_s / 3600, description="hard limit on the box's lifetime, in hours")),
)


def box_config(argv: Sequence[str] | None) -> BoxConfig:
    """The validated BoxConfig of `modal run launch_modal.py` options (`--mode vllm` or `mode=vllm`)."""
    _, options = parse_command_line(
        LaunchOptions, argv, prog="modal run launch_modal.py", description=__doc__.split("\n\n")[0]
    )
    values = options.model_dump(include=set(AS_GIVEN))
    values |= {"idle_timeout_s": options.idle_timeout, "timeout_s": int(options.max_hours * 3600)}
    if options.public_key:
        values["public_key"] = read_public_key(options.public_key)
    return validate_config(BoxConfig, values)


@app.local_entrypoint()
@cli_main
def main(*arglist: str) -> None:
    """Validate the options here, make the box's credential here and print it once, then start the box and stream
    its output (the URL or ssh command) until it stops."""
    config = box_config(arglist)
    credentials = []
    if config.mode in CREDENTIAL_ENV:
        credential = new_token()
        credentials.append(modal.Secret.from_dict({CREDENTIAL_ENV[config.mode]: credential}))
        print(credential_message(config, credential), flush=True)
    if config.mode == "vllm":
        credentials += available_secrets(["huggingface"])  # HF_TOKEN for gated models, when the secret exists
    box.with_options(**box_options(config), secrets=credentials).remote(config.model_dump_json())


if (
    __name__ == "__main__"
):  # `python launch_modal.py --help`: the options; with options: the box they describe, no launch
    print(cli_main(box_config)(None).model_dump_json(indent=2))
